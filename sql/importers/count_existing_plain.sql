-- Good rows of the staged file whose id is already in a catalog table that has no feature
-- columns (every existing row is then just an id).
SELECT count(*) AS rows_existing, 0 AS rows_existing_stubs
FROM import_typed AS t
WHERE t.reject_reason IS NULL
  AND EXISTS (SELECT 1 FROM {table} AS e WHERE e.{key} = t.{key});
