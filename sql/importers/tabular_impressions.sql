-- Contract-shaped impressions (user_id, item_id, ts, clicked; optional exposed, position,
-- request_id) → impression rows. ts: a timestamp (an offset is converted to UTC) or Unix
-- seconds. exposed defaults to TRUE only when the file has no exposed column at all.
CREATE OR REPLACE TEMP TABLE import_typed AS
WITH j AS (
    SELECT source_file, source_line, raw, to_json(raw) AS raw_json FROM import_stage
), typed AS (
    SELECT
        *,
        raw_json->>'user_id' AS user_raw,
        raw_json->>'item_id' AS item_raw,
        raw_json->>'ts' AS ts_raw,
        raw_json->>'clicked' AS clicked_raw,
        raw_json->>'exposed' AS exposed_raw,
        raw_json->>'position' AS position_raw,
        raw_json->>'request_id' AS request_id
    FROM j
), converted AS (
    SELECT
        *,
        tarq_int(user_raw) AS user_id,
        tarq_int(item_raw) AS item_id,
        tarq_ts(ts_raw) AS ts,
        tarq_bool(clicked_raw) AS clicked,
        CASE WHEN $has_exposed THEN tarq_bool(exposed_raw) ELSE TRUE END AS exposed,
        TRY_CAST(tarq_int(position_raw) AS INTEGER) AS position
    FROM typed
), checked AS (
    SELECT
        *,
        nullif(concat_ws('; ',
            tarq_missing('user_id', user_raw),
            tarq_missing('item_id', item_raw),
            tarq_missing('ts', ts_raw),
            tarq_missing('clicked', clicked_raw),
            CASE WHEN $has_exposed THEN tarq_missing('exposed', exposed_raw) END), '')
            AS null_reason,
        nullif(concat_ws('; ',
            tarq_bad('user_id', user_raw, user_id, 'an integer id'),
            tarq_bad('item_id', item_raw, item_id, 'an integer id'),
            tarq_bad('ts', ts_raw, ts, 'a timestamp'),
            tarq_bad('clicked', clicked_raw, clicked, 'a boolean'),
            tarq_bad('exposed', exposed_raw, exposed, 'a boolean'),
            tarq_bad('position', position_raw, position, 'an integer')), '') AS cast_reason
    FROM converted
)
SELECT
    source_file, source_line, raw, raw_json,
    user_id, item_id, ts, clicked, exposed, position, request_id,
    tarq_reject_check(null_reason, cast_reason) AS reject_check,
    tarq_reject_reason(null_reason, cast_reason) AS reject_reason
FROM checked;
