-- Values of one categorical field that only appears on the target/user side, seen in at
-- least $min_count training impressions.
SELECT {field} AS value
FROM read_parquet($files)
WHERE {field} IS NOT NULL
GROUP BY {field}
HAVING count(*) >= $min_count
ORDER BY value
