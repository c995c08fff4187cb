-- Impressions per day from $first_day to $day: all rows, and the usable ones (not
-- quarantined) with their exposures and clicks on exposures, for the volume and CTR checks.
WITH days AS (
    SELECT d::DATE AS day FROM range($first_day::TIMESTAMP, $day::TIMESTAMP + INTERVAL 1 DAY, INTERVAL 1 DAY) AS r(d)
),
rows AS (
    SELECT
        i.ts::DATE AS day,
        q.row_id IS NULL AS usable,
        i.exposed,
        i.clicked
    FROM impressions AS i
    LEFT JOIN (SELECT DISTINCT row_id FROM quarantine_impressions WHERE row_id IS NOT NULL) AS q
        ON q.row_id = i.row_id
    WHERE i.ts >= $first_day::TIMESTAMP AND i.ts < $day::TIMESTAMP + INTERVAL 1 DAY
)
SELECT
    d.day,
    count(r.day)                                            AS impressions,
    count_if(r.usable)                                      AS usable,
    count_if(r.usable AND r.exposed)                        AS exposed,
    count_if(r.usable AND r.exposed AND r.clicked)          AS clicks
FROM days AS d
LEFT JOIN rows AS r ON r.day = d.day
GROUP BY d.day
ORDER BY d.day;
