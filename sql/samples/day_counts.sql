-- Impressions per day in the window, before exclusions (the sample report compares to these).
SELECT ts::DATE AS day, count(*) AS impressions
FROM impressions
WHERE ts >= $start AND ts < $end
GROUP BY ALL
ORDER BY day
