-- Rows of {table} per day from $start to $end: how a shuffled build groups days into jobs.
SELECT ts::DATE AS day, count(*) AS n
FROM {table}
WHERE ts >= $start AND ts < $end AND user_id IS NOT NULL
GROUP BY ALL
ORDER BY day
