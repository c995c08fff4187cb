-- Good rows of the staged file whose id is already in the catalog table (they are skipped,
-- not quarantined), and how many of those existing rows are featureless stubs (every column
-- but the key and load_id NULL), which a feature file loaded later can no longer fill in.
WITH existing AS (
    SELECT
        {key},
        len(list_filter(
            json_extract(to_json(struct_pack(*COLUMNS(* EXCLUDE ({key}, load_id)))), '$.*'),
            lambda x: CAST(x AS VARCHAR) <> 'null')) = 0 AS is_stub
    FROM {table}
)
SELECT count(*) AS rows_existing, count(*) FILTER (WHERE e.is_stub) AS rows_existing_stubs
FROM import_typed AS t
JOIN existing AS e ON e.{key} = t.{key}
WHERE t.reject_reason IS NULL;
