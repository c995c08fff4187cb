-- Append the good rows of the staged file to items/users. Ids already present are skipped
-- (the catalog is keyed and append-only: an existing row is never replaced). $columns lists
-- the contract and side-feature columns the staged rows carry.
INSERT INTO {table} BY NAME
SELECT COLUMNS($columns), $load_id AS load_id
FROM import_typed AS t
WHERE t.reject_reason IS NULL
  AND NOT EXISTS (SELECT 1 FROM {table} AS e WHERE e.{key} = t.{key});
