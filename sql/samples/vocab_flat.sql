-- Distinct values of one categorical field that only appears on the target/user side.
SELECT DISTINCT {field} AS value FROM read_parquet($files)
WHERE {field} IS NOT NULL
ORDER BY value
