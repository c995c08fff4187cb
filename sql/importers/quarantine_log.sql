-- Rejected log rows (impressions/behaviors) → quarantine_<table>. row_id is NULL: the row
-- never reached the raw table.
INSERT INTO {qtable} (row_id, run_id, stage, check_name, reason, source, source_line, raw_row)
SELECT NULL, $load_id, 'import', reject_check, reject_reason, source_file, source_line, to_json(raw)
FROM import_typed
WHERE reject_reason IS NOT NULL;
