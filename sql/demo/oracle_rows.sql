-- The impressions of one test day ($lo <= ts < $hi) as the samples hold them (the same filters
-- as samples/rows.sql, row_id order), with the demo world's recorded truth of the exposed ones
-- (NULL where none was recorded): tarq.data.demo_oracle scores them against the truth.
SELECT i.user_id, i.item_id, i.clicked, i.exposed, t.logit, t.user_part, t.hist_part,
       t.position_part
FROM impressions AS i
LEFT JOIN demo_truth AS t
    ON printf('%016x', t.request_key) = i.request_id AND t.item_id = i.item_id
WHERE i.ts >= $lo AND i.ts < $hi
  AND i.user_id IS NOT NULL AND i.item_id IS NOT NULL AND i.ts IS NOT NULL
  AND i.clicked IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM quarantine_impressions AS q WHERE q.row_id = i.row_id)
ORDER BY i.row_id
