-- The checked day's impressions and how many of them are quarantined (any check, any run).
SELECT
    count(*) AS impressions,
    count(*) FILTER (
        WHERE EXISTS (SELECT 1 FROM quarantine_impressions AS q WHERE q.row_id = i.row_id)
    ) AS quarantined
FROM impressions AS i
WHERE i.ts::DATE = $day;
