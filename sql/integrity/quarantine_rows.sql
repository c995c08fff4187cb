-- Every quarantined row of the four quarantine tables in one list (which raw row or source
-- line, which check, which run): what "the quarantine holds exactly the bad rows" compares.
WITH q AS (
    SELECT 'items' AS table_name, row_id, item_id AS key, run_id, stage, check_name, source,
           source_line
    FROM quarantine_items
    UNION ALL
    SELECT 'users', row_id, user_id, run_id, stage, check_name, source, source_line
    FROM quarantine_users
    UNION ALL
    SELECT 'impressions', row_id, NULL, run_id, stage, check_name, source, source_line
    FROM quarantine_impressions
    UNION ALL
    SELECT 'behaviors', row_id, NULL, run_id, stage, check_name, source, source_line
    FROM quarantine_behaviors
)
SELECT table_name, row_id, key, run_id, stage, check_name, source, source_line
FROM q
ORDER BY table_name, stage, check_name, row_id, source_line, key;
