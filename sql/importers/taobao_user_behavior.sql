-- Taobao UserBehavior (no header: user_id,item_id,category_id,behavior_type,timestamp) →
-- behaviour rows WITH item ids. No brand in this dataset: brand_id stays NULL.
CREATE OR REPLACE TEMP TABLE import_typed AS
WITH typed AS (
    SELECT
        source_file, source_line, raw,
        tarq_int(raw.user_id) AS user_id,
        tarq_epoch(raw."timestamp") AS ts,
        tarq_int(raw.item_id) AS item_id,
        tarq_int(raw.category_id) AS category_id,
        CAST(NULL AS BIGINT) AS brand_id,
        CASE WHEN lower(trim(raw.behavior_type)) IN ('pv', 'cart', 'fav', 'buy')
             THEN lower(trim(raw.behavior_type)) END AS action
    FROM import_stage
), checked AS (
    SELECT
        *,
        nullif(concat_ws('; ',
            tarq_missing('user_id', raw.user_id),
            tarq_missing('timestamp', raw."timestamp"),
            tarq_missing('behavior_type', raw.behavior_type)), '') AS null_reason,
        nullif(concat_ws('; ',
            tarq_bad('user_id', raw.user_id, user_id, 'an integer id'),
            tarq_bad('timestamp', raw."timestamp", ts, 'Unix seconds'),
            tarq_bad('item_id', raw.item_id, item_id, 'an integer id'),
            tarq_bad('category_id', raw.category_id, category_id, 'an integer id'),
            tarq_bad('behavior_type', raw.behavior_type, action, 'one of pv, cart, fav, buy')), '')
            AS cast_reason
    FROM typed
)
SELECT
    source_file, source_line, raw,
    user_id, ts, item_id, category_id, brand_id, action,
    tarq_reject_check(null_reason, cast_reason) AS reject_check,
    tarq_reject_reason(null_reason, cast_reason) AS reject_reason
FROM checked;
