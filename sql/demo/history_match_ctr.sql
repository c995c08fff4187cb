-- Planted-effect check of the demo logs (docs/demo-data.md, "Checking the planted effect").
--
-- CTR of exposed impressions whose category appears among the user's last $last_n organic
-- behaviours strictly before the impression ("matched") versus those whose category does not,
-- compared *within* strata of (user, day, target category, display slot capped at
-- $max_position), so that everything constant for a user on a day (profile, current
-- interests) cancels out. Mantel–Haenszel pooling over the strata holding both kinds.
--
-- "Organic" leaves out behaviours on an item at or after the user's first click on it (the
-- click's own pv and later revisits): those exist *because of* a click, so counting them would
-- let earlier outcomes of a stratum decide the match of its later impressions and bias the
-- comparison even when clicks do not depend on history at all.
--
-- Histories as in samples/rows.sql: impressions and behaviours merged per user; at equal
-- timestamps impressions sort first, so the RANGE frame over the running behaviour count holds
-- exactly the last $last_n behaviours before each impression.
WITH imp AS (
    SELECT i.row_id, i.user_id, i.item_id, i.ts, i.clicked, i.position, it.category_id
    FROM impressions AS i
    JOIN items AS it ON it.item_id = i.item_id
    WHERE i.exposed AND i.clicked IS NOT NULL AND i.user_id IS NOT NULL AND i.ts IS NOT NULL
),
first_click AS (
    SELECT user_id, item_id, min(ts) AS ts FROM imp WHERE clicked GROUP BY ALL
),
organic AS (
    SELECT b.user_id, b.ts, b.row_id, b.category_id
    FROM behaviors AS b
    LEFT JOIN first_click AS f ON f.user_id = b.user_id AND f.item_id = b.item_id
    WHERE b.user_id IN (SELECT user_id FROM imp) AND b.ts IS NOT NULL
      AND (f.ts IS NULL OR b.ts < f.ts)
),
events AS (
    SELECT user_id, ts, 0 AS kind, row_id, category_id, clicked, position FROM imp
    UNION ALL
    SELECT user_id, ts, 1 AS kind, row_id, category_id, NULL::BOOLEAN, NULL::INTEGER
    FROM organic
),
ranked AS (
    SELECT *,
           sum(kind) OVER (PARTITION BY user_id ORDER BY ts, kind, row_id
                           ROWS UNBOUNDED PRECEDING) AS n_before
    FROM events
),
with_recent AS (
    SELECT user_id, ts, kind, category_id, clicked, position,
           list(category_id) FILTER (WHERE kind = 1) OVER (
               PARTITION BY user_id ORDER BY n_before
               RANGE BETWEEN $last_n - 1 PRECEDING AND CURRENT ROW) AS recent
    FROM ranked
),
labelled AS (
    SELECT user_id, ts::DATE AS day, category_id, least(position, $max_position) AS slot,
           clicked, coalesce(list_contains(recent, category_id), false) AS matched
    FROM with_recent
    WHERE kind = 0
),
strata AS (
    SELECT user_id, day, category_id, slot,
           count(*) FILTER (WHERE matched AND clicked) AS a,
           count(*) FILTER (WHERE matched AND NOT clicked) AS b,
           count(*) FILTER (WHERE NOT matched AND clicked) AS c,
           count(*) FILTER (WHERE NOT matched AND NOT clicked) AS d
    FROM labelled
    GROUP BY ALL
),
informative AS (
    SELECT *, (a + b + c + d)::DOUBLE AS n FROM strata WHERE a + b > 0 AND c + d > 0
)
SELECT
    (SELECT sum(a + b) FROM strata) AS matched,
    (SELECT sum(a) / sum(a + b) FROM strata) AS matched_ctr,
    (SELECT sum(c + d) FROM strata) AS unmatched,
    (SELECT sum(c) / sum(c + d) FROM strata) AS unmatched_ctr,
    sum(a * (c + d) / n) / nullif(sum(c * (a + b) / n), 0) AS mh_ctr_ratio,
    sum(a * d / n) / nullif(sum(b * c / n), 0) AS mh_odds_ratio,
    count(*) AS informative_strata
FROM informative
