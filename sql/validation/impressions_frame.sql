-- The impressions under check for one validation run, as a temp table the GX batch is read
-- from and the quarantine is filled from (so both see exactly the same rows).
-- Scope: the rows of the checked days ($days, one chunk of them: whole days, see
-- chunk_days.sql; or the users of part $part of $parts of one day too big for one chunk:
-- duplicates are rows of one user and request ids are judged against the whole table, so a
-- split day flags what the whole day would), plus, when $undated (the run's last chunk),
-- rows that belong to no day (ts NULL), which are re-checked on every run and quarantined
-- once. Every helper column is
-- a function of the row's own day or of the whole table, so a chunk flags exactly the rows
-- that one frame of all the checked days would. Rows of a later day, even one still
-- in the future, are judged when their day is checked (sql/validation/not_yet_due.sql counts
-- them meanwhile); a row of a checked day later than $now is flagged. Helper columns carry
-- what a per-row GX expectation cannot see on its own (duplicate rank, catalog membership,
-- whether the row agrees with the user and day of its request id's first row anywhere in the
-- table); bad_<check> flags are the SQL twin of each row-level expectation and must flag the
-- same rows GX does.
CREATE OR REPLACE TEMP TABLE validation_impressions AS
WITH scope AS (
    SELECT row_id, user_id, item_id, ts, clicked, exposed, position, request_id
    FROM impressions
    WHERE (list_contains($days::DATE[], ts::DATE)
           AND coalesce(hash(user_id), 0) % $parts = $part)
       OR ($undated AND ts IS NULL)
),
request_owner AS (
    -- The user and day of each request id's first row (lowest row_id) in the whole table.
    SELECT request_id, arg_min(user_id, row_id) AS req_user, arg_min(ts::DATE, row_id) AS req_day
    FROM impressions
    WHERE request_id IN (SELECT request_id FROM scope WHERE request_id IS NOT NULL)
      AND user_id IS NOT NULL AND ts IS NOT NULL
    GROUP BY request_id
),
ranked AS (
    SELECT
        s.*,
        -- PARTITION BY groups NULLs together: duplicates are found null-safely.
        row_number() OVER dup AS dup_rank,
        min(s.row_id) OVER dup AS dup_of,
        CASE WHEN s.item_id IS NOT NULL THEN it.item_id IS NOT NULL END AS item_known,
        CASE WHEN s.user_id IS NOT NULL THEN us.user_id IS NOT NULL END AS user_known,
        CASE WHEN s.request_id IS NOT NULL AND s.user_id IS NOT NULL AND s.ts IS NOT NULL
             THEN s.user_id = ro.req_user AND s.ts::DATE = ro.req_day END AS request_consistent
    FROM scope AS s
    LEFT JOIN request_owner AS ro ON ro.request_id = s.request_id
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
    coalesce(NOT request_consistent, false)       AS bad_request_id_reused,
    coalesce(ts > $now, false)                    AS bad_ts_not_in_future
FROM ranked;
