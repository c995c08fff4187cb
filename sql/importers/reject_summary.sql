-- Rejected rows of the staged file per check, largest first.
SELECT reject_check, count(*) AS n
FROM import_typed
WHERE reject_reason IS NOT NULL
GROUP BY reject_check
ORDER BY n DESC, reject_check;
