-- First and last day holding a usable impression (NULLs when there is none): quarantined rows
-- and rows later than $now (UTC) do not stretch the logs, as in dates/latest_day.sql.
SELECT min(i.ts)::DATE AS first_day, max(i.ts)::DATE AS last_day
FROM impressions AS i
WHERE i.ts <= $now
  AND NOT EXISTS (SELECT 1 FROM quarantine_impressions AS q WHERE q.row_id = i.row_id)
