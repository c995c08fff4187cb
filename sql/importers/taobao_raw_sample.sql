-- Taobao raw_sample (user,time_stamp,adgroup_id,pid,nonclk,clk) → impression rows.
-- item_id = adgroup_id (the ad is the candidate), ts = time_stamp as naive UTC, clicked = clk.
-- Every row was displayed, so exposed = TRUE. position and request_id stay NULL: pid is the
-- ad slot (two values in the whole dataset), not a request, and the logs carry no rank.
-- nonclk must be the complement of clk: a row with both set, or neither, has no label we could
-- trust and is quarantined as label_conflict.
CREATE OR REPLACE TEMP TABLE import_typed AS
WITH v AS (
    SELECT
        source_file, source_line, raw,
        tarq_int(raw."user") AS user_id,
        tarq_int(raw.adgroup_id) AS item_id,
        tarq_epoch(raw.time_stamp) AS ts,
        CASE trim(raw.clk) WHEN '1' THEN TRUE WHEN '0' THEN FALSE END AS clicked,
        CASE trim(raw.nonclk) WHEN '1' THEN TRUE WHEN '0' THEN FALSE END AS not_clicked
    FROM import_stage
), checked AS (
    SELECT
        *,
        nullif(concat_ws('; ',
            tarq_missing('user', raw."user"),
            tarq_missing('time_stamp', raw.time_stamp),
            tarq_missing('adgroup_id', raw.adgroup_id),
            tarq_missing('clk', raw.clk),
            tarq_missing('nonclk', raw.nonclk)), '') AS null_reason,
        nullif(concat_ws('; ',
            tarq_bad('user', raw."user", user_id, 'an integer id'),
            tarq_bad('time_stamp', raw.time_stamp, ts, 'Unix seconds'),
            tarq_bad('adgroup_id', raw.adgroup_id, item_id, 'an integer id'),
            tarq_bad('clk', raw.clk, clicked, '0 or 1'),
            tarq_bad('nonclk', raw.nonclk, not_clicked, '0 or 1')), '') AS cast_reason,
        CASE WHEN clicked = not_clicked
             THEN 'clk ' || trim(raw.clk) || ' and nonclk ' || trim(raw.nonclk)
                  || ': exactly one of them must be 1' END AS label_reason
    FROM v
)
SELECT
    source_file, source_line, raw,
    user_id, item_id, ts, clicked,
    TRUE AS exposed,
    CAST(NULL AS INTEGER) AS position,
    CAST(NULL AS VARCHAR) AS request_id,
    tarq_reject_check(null_reason, cast_reason, label_reason, 'label_conflict')
        AS reject_check,
    tarq_reject_reason(null_reason, cast_reason, label_reason) AS reject_reason
FROM checked;
