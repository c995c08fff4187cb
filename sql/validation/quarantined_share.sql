-- Per day of $days: its impressions and how many of them are quarantined (any check, any
-- run) other than as an exact duplicate, whose first copy is kept and used: a re-delivered
-- day is complete once its copies are set aside.
SELECT
    i.ts::DATE AS day,
    count(*) AS impressions,
    count(*) FILTER (
        WHERE EXISTS (
            SELECT 1 FROM quarantine_impressions AS q
            WHERE q.row_id = i.row_id AND q.check_name <> 'duplicate_impression'
        )
    ) AS quarantined
FROM impressions AS i
WHERE list_contains($days::DATE[], i.ts::DATE)
GROUP BY i.ts::DATE
ORDER BY day;
