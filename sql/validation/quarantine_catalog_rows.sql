-- Copy catalog rows (items/users) with a NULL key into quarantine_<table>. Catalog rows have
-- no row_id, so a repeat is recognised by its JSON image; the raw row is never changed.
INSERT INTO {qtable} ({key}, row_id, run_id, stage, check_name, reason, source, source_line, raw_row)
SELECT t.{key}, NULL, $run_id, 'validation', $check_name, $reason, $source, NULL, to_json(t)
FROM {raw} AS t
WHERE t.{key} IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM {qtable} AS q
      WHERE q.check_name = $check_name AND q.stage = 'validation'
        AND q.raw_row::VARCHAR = to_json(t)::VARCHAR
  );
