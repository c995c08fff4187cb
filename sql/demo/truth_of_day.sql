-- The recorded truth of the exposed impressions logged in [$lo, $hi): the click model's two
-- parts per (request, item), which a replay of the day must reproduce.
SELECT t.request_key, t.item_id, t.user_part, t.hist_part
FROM demo_truth AS t
JOIN impressions AS i
    ON printf('%016x', t.request_key) = i.request_id AND t.item_id = i.item_id
WHERE i.ts >= $lo AND i.ts < $hi
