-- Taobao behavior_log (user,time_stamp,btag,cate,brand) → behaviour rows without item ids
-- (the public log names only category and brand). action = btag, one of pv/cart/fav/buy.
CREATE OR REPLACE TEMP TABLE import_typed AS
WITH v AS (
    SELECT
        source_file, source_line, raw,
        nullif(trim(raw.cate), 'NULL') AS cate_raw,
        nullif(trim(raw.brand), 'NULL') AS brand_raw
    FROM import_stage
), typed AS (
    SELECT
        *,
        tarq_int(raw."user") AS user_id,
        tarq_epoch(raw.time_stamp) AS ts,
        CAST(NULL AS BIGINT) AS item_id,
        tarq_int(cate_raw) AS category_id,
        tarq_int(brand_raw) AS brand_id,
        CASE WHEN lower(trim(raw.btag)) IN ('pv', 'cart', 'fav', 'buy') THEN lower(trim(raw.btag)) END AS action
    FROM v
), checked AS (
    SELECT
        *,
        nullif(concat_ws('; ',
            tarq_missing('user', raw."user"),
            tarq_missing('time_stamp', raw.time_stamp),
            tarq_missing('btag', raw.btag)), '') AS null_reason,
        nullif(concat_ws('; ',
            tarq_bad('user', raw."user", user_id, 'an integer id'),
            tarq_bad('time_stamp', raw.time_stamp, ts, 'Unix seconds'),
            tarq_bad('btag', raw.btag, action, 'one of pv, cart, fav, buy'),
            tarq_bad('cate', cate_raw, category_id, 'an integer id'),
            tarq_bad('brand', brand_raw, brand_id, 'an integer id')), '') AS cast_reason
    FROM typed
)
SELECT
    source_file, source_line, raw,
    user_id, ts, item_id, category_id, brand_id, action,
    tarq_reject_check(null_reason, cast_reason) AS reject_check,
    tarq_reject_reason(null_reason, cast_reason) AS reject_reason
FROM checked;
