-- The behaviours under check for one validation run (see impressions_frame.sql for the
-- scope): one chunk of the checked days' rows (or of one user-hash part of a day), plus rows
-- with no timestamp when $undated.
-- $actions is the allowed action vocabulary (ValidationBounds.actions). dup_rank numbers the
-- copies of one (user_id, item_id, ts, action): a re-delivered log repeats them; the lowest
-- row_id is kept.
CREATE OR REPLACE TEMP TABLE validation_behaviors AS
WITH scope AS (
    SELECT row_id, user_id, ts, item_id, action
    FROM behaviors
    WHERE (list_contains($days::DATE[], ts::DATE)
           AND coalesce(hash(user_id), 0) % $parts = $part)
       OR ($undated AND ts IS NULL)
),
ranked AS (
    SELECT
        *,
        -- PARTITION BY groups NULLs together: duplicates are found null-safely.
        row_number() OVER (PARTITION BY user_id, item_id, ts, action ORDER BY row_id) AS dup_rank
    FROM scope
)
SELECT
    *,
    user_id IS NULL                                                   AS bad_not_null_user_id,
    ts IS NULL                                                        AS bad_not_null_ts,
    action IS NULL                                                    AS bad_not_null_action,
    coalesce(NOT list_contains($actions::VARCHAR[], action), false)   AS bad_action_in_set,
    dup_rank > 1                                                      AS bad_duplicate_behavior,
    coalesce(ts > $now, false)                                        AS bad_ts_not_in_future
FROM ranked;
