-- behaviors in lake layout: the landing rows and the committed files (lake/view_impressions).
CREATE OR REPLACE VIEW behaviors AS
SELECT row_id, user_id, ts, item_id, category_id, brand_id, action, load_id
FROM lake_landing_behaviors
UNION ALL
SELECT CAST(row_id AS BIGINT), CAST(user_id AS BIGINT), CAST(ts AS TIMESTAMP),
       CAST(item_id AS BIGINT), CAST(category_id AS BIGINT), CAST(brand_id AS BIGINT),
       CAST(action AS VARCHAR), CAST(load_id AS VARCHAR)
FROM read_parquet({files}, hive_partitioning = false)
