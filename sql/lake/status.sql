-- Files, rows, bytes and days of the committed files, per log table.
SELECT table_name, count(*) AS files, sum(rows) AS n_rows, sum(bytes) AS bytes,
       count(DISTINCT day) AS days, min(day) AS first_day, max(day) AS last_day
FROM lake_files
GROUP BY table_name
ORDER BY table_name
