-- Point-in-time samples: one row per impression of [$start, $end) of the users in hash bucket
-- $bucket of $buckets, with the user's last $seq_len behaviours strictly before the impression
-- time (looked up from $history_start on). Buckets of users bound the memory of one statement
-- while every behaviour is still windowed once; `split` is 'test' on $test_day, else 'train'.
--
-- Impressions and the behaviours of the same users are merged into one time-ordered stream per
-- user. At equal timestamps impressions sort before behaviours, so a running count of behaviours
-- gives each impression n = number of behaviours strictly before it and each behaviour its rank.
-- A RANGE frame over that count then holds exactly behaviours n-$seq_len+1 .. n: the history,
-- with nothing at or after the impression time. Quarantined rows are excluded on both sides.
-- Impression columns ride along in the stream so that no join back to the impressions (with
-- every event's lists in a hash table) is needed.
WITH imp AS (
    SELECT i.row_id, i.user_id, i.item_id, i.ts, i.clicked, i.exposed, i.position
    FROM impressions AS i
    WHERE i.ts >= $start AND i.ts < $end
      AND hash(i.user_id) % $buckets = $bucket
      AND i.user_id IS NOT NULL AND i.item_id IS NOT NULL AND i.ts IS NOT NULL
      AND i.clicked IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM quarantine_impressions AS q WHERE q.row_id = i.row_id)
),
beh AS (
    SELECT b.row_id, b.user_id, b.ts, b.item_id, b.category_id, b.brand_id, b.action
    FROM behaviors AS b
    WHERE b.ts >= $history_start AND b.ts < $end
      AND hash(b.user_id) % $buckets = $bucket
      AND b.user_id IS NOT NULL AND b.ts IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM quarantine_behaviors AS q WHERE q.row_id = b.row_id)
),
events AS (
    SELECT user_id, ts, 0 AS kind, row_id, item_id,
           NULL::BIGINT AS category_id, NULL::BIGINT AS brand_id, NULL::VARCHAR AS action,
           clicked, exposed, position
    FROM imp
    UNION ALL
    SELECT user_id, ts, 1 AS kind, row_id, item_id, category_id, brand_id, action,
           NULL, NULL, NULL
    FROM beh
),
ranked AS (
    SELECT *,
           sum(kind) OVER (PARTITION BY user_id ORDER BY ts, kind, row_id
                           ROWS UNBOUNDED PRECEDING) AS n_before
    FROM events
),
with_history AS (
    SELECT *,
           list(item_id ORDER BY n_before) FILTER (WHERE kind = 1) OVER w AS hist_item_id,
           list(category_id ORDER BY n_before) FILTER (WHERE kind = 1) OVER w AS hist_category_id,
           list(brand_id ORDER BY n_before) FILTER (WHERE kind = 1) OVER w AS hist_brand_id,
           list(action ORDER BY n_before) FILTER (WHERE kind = 1) OVER w AS hist_action,
           list(ts ORDER BY n_before) FILTER (WHERE kind = 1) OVER w AS hist_ts
    FROM ranked
    WINDOW w AS (PARTITION BY user_id ORDER BY n_before
                 RANGE BETWEEN $seq_len - 1 PRECEDING AND CURRENT ROW)
)
SELECT
    CASE WHEN h.ts::DATE = $test_day THEN 'test' ELSE 'train' END AS split,
    h.row_id,
    h.ts::DATE AS day,
    h.ts,
    h.user_id,
    h.item_id,
    h.clicked::TINYINT AS label,
    h.exposed,
    h.position,
    CAST(hash(h.row_id) % 100 AS TINYINT) AS fold,
    it.* EXCLUDE (item_id, load_id, price),
    price_bucket(it.price) AS price_bucket,
    us.* EXCLUDE (user_id, load_id),
    coalesce(h.hist_item_id, []) AS hist_item_id,
    coalesce(h.hist_category_id, []) AS hist_category_id,
    coalesce(h.hist_brand_id, []) AS hist_brand_id,
    coalesce(h.hist_action, []) AS hist_action,
    coalesce(h.hist_ts, []) AS hist_ts
FROM with_history AS h
LEFT JOIN items AS it ON it.item_id = h.item_id
LEFT JOIN users AS us ON us.user_id = h.user_id
WHERE h.kind = 0
ORDER BY h.row_id
