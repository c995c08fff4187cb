INSERT INTO impressions (user_id, item_id, ts, clicked, exposed, position, request_id, load_id)
SELECT 1 + (random() * ($n_users - 1))::BIGINT,
       1 + (random() * ($n_items - 1))::BIGINT,
       $start + to_seconds((random() * $days * 86400)::BIGINT),
       random() < 0.05, true, 0, NULL, 'bench'
FROM range($n_impressions)
