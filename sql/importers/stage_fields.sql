-- No rows: the result's column names are the staged file's field names, in file order.
SELECT unnest(raw) FROM import_stage LIMIT 0;
