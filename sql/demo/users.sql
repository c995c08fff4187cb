-- Every user row with its features, ordered by user_id (the A/B rankers look users up in it;
-- the same raw columns the sample rows join from users).
SELECT us.* EXCLUDE (load_id)
FROM users AS us
ORDER BY us.user_id
