-- Distinct values of one categorical field in the training samples (target and history
-- sides together, so the target item and a behaviour on it share one embedding row).
SELECT DISTINCT v AS value FROM (
    SELECT {field} AS v FROM read_parquet($files)
    UNION ALL
    SELECT unnest({hist_field}) AS v FROM read_parquet($files)
) WHERE v IS NOT NULL
ORDER BY value
