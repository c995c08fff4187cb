INSERT INTO behaviors (user_id, ts, item_id, category_id, brand_id, action, load_id)
SELECT u, ts, it, it % 500, it % 5000, 'pv', 'bench'
FROM (
    SELECT 1 + (random() * ($n_users - 1))::BIGINT AS u,
           1 + (random() * ($n_items - 1))::BIGINT AS it,
           $start - INTERVAL 7 DAY + to_seconds((random() * ($days + 7) * 86400)::BIGINT) AS ts
    FROM range($n_behaviors)
)
