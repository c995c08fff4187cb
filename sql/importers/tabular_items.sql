-- Contract-shaped items (item_id, optional category_id, brand_id, price) → catalog rows.
-- A price of inf, -inf or NaN (text or a Parquet DOUBLE) is rejected as non_finite.
-- raw_json keeps the row for the side-feature steps (tabular_side_*.sql).
CREATE OR REPLACE TEMP TABLE import_typed AS
WITH j AS (
    SELECT source_file, source_line, raw, to_json(raw) AS raw_json FROM import_stage
), typed AS (
    SELECT
        *,
        raw_json->>'item_id' AS item_raw,
        raw_json->>'category_id' AS category_raw,
        raw_json->>'brand_id' AS brand_raw,
        raw_json->>'price' AS price_raw
    FROM j
), converted AS (
    SELECT
        *,
        tarq_int(item_raw) AS item_id,
        tarq_int(category_raw) AS category_id,
        tarq_int(brand_raw) AS brand_id,
        tarq_double(price_raw) AS price
    FROM typed
), checked AS (
    SELECT
        *,
        tarq_missing('item_id', item_raw) AS null_reason,
        nullif(concat_ws('; ',
            tarq_bad('item_id', item_raw, item_id, 'an integer id'),
            tarq_bad('category_id', category_raw, category_id, 'an integer id'),
            tarq_bad('brand_id', brand_raw, brand_id, 'an integer id'),
            tarq_bad('price', price_raw, price, 'a number')), '') AS cast_reason,
        tarq_nonfinite('price', price_raw) AS finite_reason
    FROM converted
)
SELECT
    source_file, source_line, raw, raw_json,
    item_id, category_id, brand_id, price,
    tarq_reject_check(null_reason, cast_reason, finite_reason, 'non_finite')
        AS reject_check,
    tarq_reject_reason(null_reason, cast_reason, finite_reason) AS reject_reason
FROM checked;
