-- MovieLens ratings (u.data or RecBole .inter: user_id, item_id, rating, timestamp) → one row
-- that becomes both an impression and a behaviour.
-- Impression: clicked = rating >= 4 (the usual implicit-feedback cut), exposed = TRUE.
-- Behaviour at the same timestamp: action 'fav' for rating >= 4, 'pv' otherwise, with the
-- item's category and brand codes from the catalog. The sample builder takes only behaviours
-- strictly before an impression, so a user's history is their earlier ratings.
CREATE OR REPLACE TEMP TABLE import_typed AS
WITH typed AS (
    SELECT
        s.source_file, s.source_line, s.raw,
        tarq_int(s.raw.user_id) AS user_id,
        tarq_int(s.raw.item_id) AS item_id,
        tarq_double(s.raw.rating) AS rating,
        tarq_epoch(s.raw."timestamp") AS ts
    FROM import_stage AS s
), checked AS (
    SELECT
        *,
        nullif(concat_ws('; ',
            tarq_missing('user_id', raw.user_id),
            tarq_missing('item_id', raw.item_id),
            tarq_missing('rating', raw.rating),
            tarq_missing('timestamp', raw."timestamp")), '') AS null_reason,
        nullif(concat_ws('; ',
            tarq_bad('user_id', raw.user_id, user_id, 'an integer id'),
            tarq_bad('item_id', raw.item_id, item_id, 'an integer id'),
            tarq_bad('rating', raw.rating, rating, 'a number'),
            tarq_bad('timestamp', raw."timestamp", ts, 'Unix seconds')), '') AS cast_reason,
        -- NaN >= 4 is true in DuckDB: a 'nan' rating would become a click.
        tarq_nonfinite('rating', raw.rating) AS finite_reason
    FROM typed
)
SELECT
    c.source_file, c.source_line, c.raw,
    c.user_id, c.item_id, c.ts,
    c.rating >= 4 AS clicked,
    TRUE AS exposed,
    CAST(NULL AS INTEGER) AS position,
    CAST(NULL AS VARCHAR) AS request_id,
    CASE WHEN c.rating >= 4 THEN 'fav' ELSE 'pv' END AS action,
    i.category_id,
    i.brand_id,
    tarq_reject_check(c.null_reason, c.cast_reason, c.finite_reason, 'non_finite')
        AS reject_check,
    tarq_reject_reason(c.null_reason, c.cast_reason, c.finite_reason) AS reject_reason
FROM checked AS c
LEFT JOIN items AS i ON i.item_id = c.item_id;
