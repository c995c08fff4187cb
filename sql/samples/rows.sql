-- Point-in-time samples: one row per impression of [$start, $end) of the users in hash bucket
-- $bucket of $buckets, with the user's last $seq_len behaviours strictly before the impression
-- time (looked up from $history_start on). Buckets of users bound the memory of one statement;
-- `split` is 'test' on the test window $test_start .. $test_day (one day unless a benchmark asks
-- for more), else 'train'. Every row's history stops before its own impression, whatever its split:
-- a test row of day k sees the earlier test days' behaviours, never day k+1's.
--
-- Impressions and the behaviours of the same users are merged into one time-ordered stream per
-- user. At equal timestamps impressions sort before behaviours, so a running count of behaviours
-- gives each impression n = the number of the user's behaviours strictly before it. Each user's
-- behaviours are collected ONCE into lists in the same order, and an impression's history is
-- the slice n-$seq_len+1 .. n of them: nothing at or after the impression time. (A list window
-- over the stream would build a list for every behaviour too, and hold them all in memory.)
-- Quarantined rows are excluded on both sides. {impressions} and {behaviors} are the log tables,
-- or (a shuffled build, shuffle.sql) temp tables of this bucket's rows: the same filters apply.
WITH imp AS (
    SELECT i.row_id, i.user_id, i.item_id, i.ts, i.clicked, i.exposed, i.position
    FROM {impressions} AS i
    WHERE i.ts >= $start AND i.ts < $end
      AND hash(i.user_id) % $buckets = $bucket
      AND i.user_id IS NOT NULL AND i.item_id IS NOT NULL AND i.ts IS NOT NULL
      AND i.clicked IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM quarantine_impressions AS q WHERE q.row_id = i.row_id)
),
beh AS (
    SELECT b.row_id, b.user_id, b.ts, b.item_id, b.category_id, b.brand_id, b.action
    FROM {behaviors} AS b
    WHERE b.ts >= $history_start AND b.ts < $end
      AND hash(b.user_id) % $buckets = $bucket
      AND b.user_id IS NOT NULL AND b.ts IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM quarantine_behaviors AS q WHERE q.row_id = b.row_id)
),
events AS (
    SELECT user_id, ts, 0 AS kind, row_id, item_id, clicked, exposed, position
    FROM imp
    UNION ALL
    SELECT user_id, ts, 1 AS kind, row_id, NULL, NULL, NULL, NULL
    FROM beh
),
ranked AS (
    SELECT *,
           sum(kind) OVER (PARTITION BY user_id ORDER BY ts, kind, row_id
                           ROWS UNBOUNDED PRECEDING) AS n_before
    FROM events
),
user_history AS (
    SELECT user_id,
           list(item_id ORDER BY ts, row_id) AS items,
           list(category_id ORDER BY ts, row_id) AS categories,
           list(brand_id ORDER BY ts, row_id) AS brands,
           list(action ORDER BY ts, row_id) AS actions,
           list(ts ORDER BY ts, row_id) AS times
    FROM beh
    GROUP BY user_id
),
with_history AS (
    SELECT r.*,
           list_slice(uh.items, greatest(r.n_before - $seq_len, 0) + 1, r.n_before) AS hist_item_id,
           list_slice(uh.categories, greatest(r.n_before - $seq_len, 0) + 1, r.n_before)
               AS hist_category_id,
           list_slice(uh.brands, greatest(r.n_before - $seq_len, 0) + 1, r.n_before) AS hist_brand_id,
           list_slice(uh.actions, greatest(r.n_before - $seq_len, 0) + 1, r.n_before) AS hist_action,
           list_slice(uh.times, greatest(r.n_before - $seq_len, 0) + 1, r.n_before) AS hist_ts
    FROM ranked AS r
    LEFT JOIN user_history AS uh ON uh.user_id = r.user_id
    WHERE r.kind = 0
)
SELECT
    CASE WHEN h.ts::DATE BETWEEN $test_start AND $test_day THEN 'test' ELSE 'train' END AS split,
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
    -- A non-finite price (stored before import rejected them) is an unknown price: casting
    -- its bucket to BIGINT would fail every build for good (the catalog is append-only).
    price_bucket(CASE WHEN isfinite(it.price) THEN it.price END) AS price_bucket,
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
