-- Copy the catalog rows (items) one check flagged in {frame} into quarantine_<table>, keyed
-- by {key}; the raw row is never changed. A (key, check) already quarantined by validation is
-- not inserted again.
INSERT INTO {qtable} ({key}, row_id, run_id, stage, check_name, reason, source, source_line, raw_row)
SELECT t.{key}, NULL, $run_id, 'validation', $check_name, $reason, $source, NULL, to_json(t)
FROM {raw} AS t
JOIN {frame} AS f ON f.{key} = t.{key}
WHERE f.{flag}
  AND NOT EXISTS (
      SELECT 1 FROM {qtable} AS q
      WHERE q.{key} = t.{key} AND q.check_name = $check_name AND q.stage = 'validation'
  );
