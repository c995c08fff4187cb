-- Contract-shaped users (user_id; profile columns come as side features) → user rows.
CREATE OR REPLACE TEMP TABLE import_typed AS
WITH j AS (
    SELECT source_file, source_line, raw, to_json(raw) AS raw_json FROM import_stage
), typed AS (
    SELECT *, raw_json->>'user_id' AS user_raw FROM j
), checked AS (
    SELECT
        *,
        tarq_int(user_raw) AS user_id,
        tarq_missing('user_id', user_raw) AS null_reason,
        tarq_bad('user_id', user_raw, tarq_int(user_raw), 'an integer id') AS cast_reason
    FROM typed
)
SELECT
    source_file, source_line, raw, raw_json,
    user_id,
    tarq_reject_check(null_reason, cast_reason) AS reject_check,
    tarq_reject_reason(null_reason, cast_reason) AS reject_reason
FROM checked;
