-- Values of one categorical field in the training samples (target and history sides together,
-- so the target item and a behaviour on it share one embedding row) seen at least $min_count
-- times. A value counts once per impression it is the target of and once per user whose
-- histories hold it (a behaviour repeats in every later history of its user: counted per row,
-- one view would pass any threshold).
WITH sightings AS (
    SELECT {field} AS v FROM read_parquet($files)
    UNION ALL
    SELECT v FROM (
        SELECT DISTINCT user_id, unnest({hist_field}) AS v FROM read_parquet($files)
    )
)
SELECT v AS value
FROM sightings
WHERE v IS NOT NULL
GROUP BY v
HAVING count(*) >= $min_count
ORDER BY value
