-- Add one categorical side feature to the staged tabular rows: integer values are kept as
-- codes, any other text gets its stable code (tarq_code), so string categories work too.
CREATE OR REPLACE TEMP TABLE import_typed AS
SELECT
    *,
    coalesce(tarq_int(nullif(trim(raw_json->>$key), '')), tarq_code(nullif(trim(raw_json->>$key), '')))
        AS {col}
FROM import_typed;
