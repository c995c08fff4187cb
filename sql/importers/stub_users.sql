-- User stubs: every user of this load's impressions missing from users gets a row with
-- user_id only (profile features NULL → OOV).
INSERT INTO users (user_id, load_id)
SELECT DISTINCT i.user_id, $load_id
FROM impressions AS i
WHERE i.load_id = $load_id
  AND i.user_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM users AS u WHERE u.user_id = i.user_id);
