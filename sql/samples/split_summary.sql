-- Rows and positives per day of the written sample files.
SELECT day, count(*) AS rows, coalesce(sum(label), 0) AS positives
FROM read_parquet($files)
GROUP BY day
ORDER BY day
