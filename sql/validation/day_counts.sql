-- Per day from $first_day to $last_day: all impressions, the usable ones (not quarantined)
-- with their exposures and clicks on exposures (volume, CTR), the usable impressions whose
-- item is a catalog stub (no category, brand or price: created by an import for an unknown
-- id), and the exposed usable impressions, clicked and not, whose item the user acted on in
-- the $history_minutes before the impression (the cross-log clock check: a click's follow-up
-- view that lands before the impression is leakage into its history). ctr_cc, ctr_ce and
-- ctr_ee are sums over the day's users of clicks², clicks·exposed and exposed² (usable
-- exposed rows): a user's rows are not independent, and these give the CTR check its
-- user-clustered variance Σ(c_u − p·e_u)² = cc − 2p·ce + p²·ee for any baseline CTR p.
WITH days AS (
    SELECT d::DATE AS day
    FROM range($first_day::TIMESTAMP, $last_day::TIMESTAMP + INTERVAL 1 DAY, INTERVAL 1 DAY) AS r(d)
),
imp AS (
    SELECT
        i.row_id, i.user_id, i.item_id, i.ts, i.ts::DATE AS day, i.exposed, i.clicked,
        q.row_id IS NULL AS usable
    FROM impressions AS i
    LEFT JOIN (SELECT DISTINCT row_id FROM quarantine_impressions WHERE row_id IS NOT NULL) AS q
        ON q.row_id = i.row_id
    WHERE i.ts >= $first_day::TIMESTAMP AND i.ts < $last_day::TIMESTAMP + INTERVAL 1 DAY
),
beh AS (
    SELECT b.user_id, b.item_id, b.ts
    FROM behaviors AS b
    -- Every behaviour an impression of the days can see: each day's figures depend on that
    -- day alone, whatever $first_day (a mapped job reads a few days and their trailing ones).
    WHERE b.ts >= $first_day::TIMESTAMP - INTERVAL 1 MINUTE * $history_minutes
      AND b.ts < $last_day::TIMESTAMP + INTERVAL 1 DAY
      AND b.item_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM quarantine_behaviors AS q WHERE q.row_id = b.row_id)
),
recent AS (
    SELECT DISTINCT i.row_id
    FROM imp AS i
    JOIN beh AS b
        ON b.user_id = i.user_id AND b.item_id = i.item_id
       AND b.ts < i.ts AND b.ts >= i.ts - INTERVAL 1 MINUTE * $history_minutes
    WHERE i.usable AND i.exposed
),
rows AS (
    SELECT
        i.*,
        it.category_id IS NULL AND it.brand_id IS NULL AND it.price IS NULL AS stub,
        r.row_id IS NOT NULL AS recent
    FROM imp AS i
    LEFT JOIN items AS it ON it.item_id = i.item_id
    LEFT JOIN recent AS r ON r.row_id = i.row_id
),
per_user AS (
    SELECT day, user_id,
           count_if(exposed AND clicked)::DOUBLE AS c, count_if(exposed)::DOUBLE AS e
    FROM rows
    WHERE usable AND exposed
    GROUP BY day, user_id
),
clustered AS (
    SELECT day, sum(c * c) AS ctr_cc, sum(c * e) AS ctr_ce, sum(e * e) AS ctr_ee
    FROM per_user
    GROUP BY day
),
per_day AS (
    SELECT
        d.day,
        count(r.day)                                                    AS impressions,
        count_if(r.usable)                                              AS usable,
        count_if(r.usable AND r.exposed)                                AS exposed,
        count_if(r.usable AND r.exposed AND r.clicked)                  AS clicks,
        count_if(r.usable AND r.stub)                                   AS stub_impressions,
        count_if(r.usable AND r.exposed AND r.clicked AND r.recent)     AS clicks_after_history,
        count_if(r.usable AND r.exposed AND NOT r.clicked AND r.recent) AS nonclicks_after_history
    FROM days AS d
    LEFT JOIN rows AS r ON r.day = d.day
    GROUP BY d.day
)
SELECT p.*, c.ctr_cc, c.ctr_ce, c.ctr_ee
FROM per_day AS p
LEFT JOIN clustered AS c ON c.day = p.day
ORDER BY p.day;
