-- The impressions under check for one validation run, as a temp table the GX batch is read
-- from and the quarantine is filled from (so both see exactly the same rows).
-- Scope: the rows of the checked day (ts::DATE = $day), plus rows that belong to no day or to
-- a day that has not happened yet (ts NULL or later than $now); those are re-checked on every
-- run and quarantined once. Helper columns carry what a per-row GX expectation cannot see on
-- its own (duplicate rank, catalog membership); bad_<check> flags are the SQL twin of each
-- row-level expectation and must flag the same rows GX does.
CREATE OR REPLACE TEMP TABLE validation_impressions AS
WITH scope AS (
    SELECT row_id, user_id, item_id, ts, clicked, exposed, position, request_id
    FROM impressions
    WHERE ts::DATE = $day OR ts IS NULL OR ts > $now
),
ranked AS (
    SELECT
        s.*,
        -- PARTITION BY groups NULLs together: duplicates are found null-safely.
        row_number() OVER dup AS dup_rank,
        min(s.row_id) OVER dup AS dup_of,
        CASE WHEN s.item_id IS NOT NULL THEN it.item_id IS NOT NULL END AS item_known,
        CASE WHEN s.user_id IS NOT NULL THEN us.user_id IS NOT NULL END AS user_known
    FROM scope AS s
    LEFT JOIN items AS it ON it.item_id = s.item_id
    LEFT JOIN users AS us ON us.user_id = s.user_id
    WINDOW dup AS (PARTITION BY s.user_id, s.item_id, s.ts, s.request_id ORDER BY s.row_id)
)
SELECT
    *,
    user_id IS NULL                               AS bad_not_null_user_id,
    item_id IS NULL                               AS bad_not_null_item_id,
    ts IS NULL                                    AS bad_not_null_ts,
    clicked IS NULL                               AS bad_not_null_clicked,
    exposed IS NULL                               AS bad_not_null_exposed,
    coalesce(clicked AND NOT exposed, false)      AS bad_clicked_implies_exposed,
    coalesce(position < 0, false)                 AS bad_position_non_negative,
    dup_rank > 1                                  AS bad_duplicate_impression,
    coalesce(NOT item_known, false)               AS bad_item_in_catalog,
    coalesce(NOT user_known, false)               AS bad_user_in_users,
    coalesce(ts > $now, false)                    AS bad_ts_not_in_future
FROM ranked;
