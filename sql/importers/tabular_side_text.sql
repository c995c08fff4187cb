-- Add one text side feature, kept as given (for people; not a model input).
CREATE OR REPLACE TEMP TABLE import_typed AS
SELECT *, nullif(raw_json->>$key, '') AS {col}
FROM import_typed;
