-- Structural problems found while staging a text file, first lines first.
SELECT line, column_name, error_type, csv_line, error_message
FROM import_reject_errors
ORDER BY line, column_idx
LIMIT $limit;
