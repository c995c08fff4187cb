-- Copy the rows one check flagged into quarantine_<table> (impressions/behaviors). The raw
-- row is read, never changed; a (row_id, check_name) already quarantined by validation is not
-- inserted again, so re-validating a day adds nothing new.
INSERT INTO {qtable} (row_id, run_id, stage, check_name, reason, source, source_line, raw_row)
SELECT t.row_id, $run_id, 'validation', $check_name, $reason, $source, NULL, to_json(t)
FROM {raw} AS t
JOIN {frame} AS f ON f.row_id = t.row_id
WHERE f.{flag}
  AND NOT EXISTS (
      SELECT 1 FROM {qtable} AS q
      WHERE q.row_id = t.row_id AND q.check_name = $check_name AND q.stage = 'validation'
  );
