-- Rejected catalog rows (items/users) → quarantine_<table>, with the key when it parsed.
INSERT INTO {qtable} ({key}, row_id, run_id, stage, check_name, reason, source, source_line, raw_row)
SELECT {key}, NULL, $load_id, 'import', reject_check, reject_reason, source_file, source_line, to_json(raw)
FROM import_typed
WHERE reject_reason IS NOT NULL;
