-- impressions in lake layout: the landing rows (a load in progress, seen by its own
-- transaction) and the committed files, listed one by one (a file not in the manifest is
-- never read). Columns, types and order are those of the raw table (README "Data contract").
CREATE OR REPLACE VIEW impressions AS
SELECT row_id, user_id, item_id, ts, clicked, exposed, position, request_id, load_id
FROM lake_landing_impressions
UNION ALL
SELECT CAST(row_id AS BIGINT), CAST(user_id AS BIGINT), CAST(item_id AS BIGINT),
       CAST(ts AS TIMESTAMP), CAST(clicked AS BOOLEAN), CAST(exposed AS BOOLEAN),
       CAST(position AS INTEGER), CAST(request_id AS VARCHAR), CAST(load_id AS VARCHAR)
FROM read_parquet({files}, hive_partitioning = false)
