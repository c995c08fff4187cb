-- Taobao ad_feature (adgroup_id,cate_id,campaign_id,customer,brand,price) → catalog rows.
-- item_id = adgroup_id, category_id = cate_id, brand_id = brand (the text 'NULL' means no
-- brand), price as is (inf/NaN rejected as non_finite); campaign_id and customer become
-- item side features.
CREATE OR REPLACE TEMP TABLE import_typed AS
WITH v AS (
    SELECT
        source_file, source_line, raw,
        nullif(trim(raw.brand), 'NULL') AS brand_raw,
        nullif(trim(raw.cate_id), 'NULL') AS cate_raw,
        nullif(trim(raw.campaign_id), 'NULL') AS campaign_raw,
        nullif(trim(raw.customer), 'NULL') AS customer_raw,
        nullif(trim(raw.price), 'NULL') AS price_raw
    FROM import_stage
), typed AS (
    SELECT
        *,
        tarq_int(raw.adgroup_id) AS item_id,
        tarq_int(cate_raw) AS category_id,
        tarq_int(brand_raw) AS brand_id,
        tarq_double(price_raw) AS price,
        tarq_int(campaign_raw) AS campaign_id,
        tarq_int(customer_raw) AS customer
    FROM v
), checked AS (
    SELECT
        *,
        tarq_missing('adgroup_id', raw.adgroup_id) AS null_reason,
        nullif(concat_ws('; ',
            tarq_bad('adgroup_id', raw.adgroup_id, item_id, 'an integer id'),
            tarq_bad('cate_id', cate_raw, category_id, 'an integer id'),
            tarq_bad('brand', brand_raw, brand_id, 'an integer id'),
            tarq_bad('price', price_raw, price, 'a number'),
            tarq_bad('campaign_id', campaign_raw, campaign_id, 'an integer id'),
            tarq_bad('customer', customer_raw, customer, 'an integer id')), '') AS cast_reason,
        tarq_nonfinite('price', price_raw) AS finite_reason
    FROM typed
)
SELECT
    source_file, source_line, raw,
    item_id, category_id, brand_id, price, campaign_id, customer,
    tarq_reject_check(null_reason, cast_reason, finite_reason, 'non_finite')
        AS reject_check,
    tarq_reject_reason(null_reason, cast_reason, finite_reason) AS reject_reason
FROM checked;
