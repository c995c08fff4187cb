-- Rows read and rows rejected in the current staged file.
SELECT count(*) AS rows_read, count(*) FILTER (WHERE reject_reason IS NOT NULL) AS rows_rejected
FROM import_typed;
