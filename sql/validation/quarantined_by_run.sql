-- Rows one validation run put into quarantine_<table>, per check.
SELECT check_name, count(*) AS n
FROM {qtable}
WHERE run_id = $run_id AND stage = 'validation'
GROUP BY check_name
ORDER BY check_name;
