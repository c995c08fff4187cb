-- Contract-shaped behaviours (user_id, ts, action; optional item_id, category_id, brand_id)
-- → behaviour rows. action is kept as given (lower-cased); validation checks its domain.
CREATE OR REPLACE TEMP TABLE import_typed AS
WITH j AS (
    SELECT source_file, source_line, raw, to_json(raw) AS raw_json FROM import_stage
), typed AS (
    SELECT
        *,
        raw_json->>'user_id' AS user_raw,
        raw_json->>'ts' AS ts_raw,
        raw_json->>'item_id' AS item_raw,
        raw_json->>'category_id' AS category_raw,
        raw_json->>'brand_id' AS brand_raw,
        nullif(lower(trim(raw_json->>'action')), '') AS action
    FROM j
), converted AS (
    SELECT
        *,
        tarq_int(user_raw) AS user_id,
        tarq_ts(ts_raw) AS ts,
        tarq_int(item_raw) AS item_id,
        tarq_int(category_raw) AS category_id,
        tarq_int(brand_raw) AS brand_id
    FROM typed
), checked AS (
    SELECT
        *,
        nullif(concat_ws('; ',
            tarq_missing('user_id', user_raw),
            tarq_missing('ts', ts_raw),
            tarq_missing('action', action)), '') AS null_reason,
        nullif(concat_ws('; ',
            tarq_bad('user_id', user_raw, user_id, 'an integer id'),
            tarq_bad('ts', ts_raw, ts, 'a timestamp'),
            tarq_bad('item_id', item_raw, item_id, 'an integer id'),
            tarq_bad('category_id', category_raw, category_id, 'an integer id'),
            tarq_bad('brand_id', brand_raw, brand_id, 'an integer id')), '') AS cast_reason
    FROM converted
)
SELECT
    source_file, source_line, raw, raw_json,
    user_id, ts, item_id, category_id, brand_id, action,
    tarq_reject_check(null_reason, cast_reason) AS reject_check,
    tarq_reject_reason(null_reason, cast_reason) AS reject_reason
FROM checked;
