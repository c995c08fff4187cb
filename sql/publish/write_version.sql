-- Write one publication's rows: the ids file (item_id, code_0..code_{m-1}, v_item) plus the
-- version, model and run date, as table {table}.
CREATE TABLE {table} AS
SELECT
    $version::INTEGER AS version,
    p.*,
    $model_name::VARCHAR AS model_name,
    $model_version::VARCHAR AS model_version,
    $run_date::DATE AS run_date,
    $published_at::TIMESTAMP AS published_at
FROM read_parquet($path) AS p
ORDER BY p.item_id
