-- The behaviours under check for one validation run (see impressions_frame.sql for the
-- scope): the checked day's rows plus rows with no timestamp or one later than $now.
-- $actions is the allowed action vocabulary (ValidationBounds.actions).
CREATE OR REPLACE TEMP TABLE validation_behaviors AS
WITH scope AS (
    SELECT row_id, user_id, ts, item_id, action
    FROM behaviors
    WHERE ts::DATE = $day OR ts IS NULL OR ts > $now
)
SELECT
    *,
    user_id IS NULL                                                   AS bad_not_null_user_id,
    ts IS NULL                                                        AS bad_not_null_ts,
    action IS NULL                                                    AS bad_not_null_action,
    coalesce(NOT list_contains($actions::VARCHAR[], action), false)   AS bad_action_in_set,
    coalesce(ts > $now, false)                                        AS bad_ts_not_in_future
FROM scope;
