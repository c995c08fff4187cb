-- A finished publication of the same model version and run date (idempotency key).
SELECT version, ids_sha256, status, table_name, export_path
FROM semantic_id_versions
WHERE model_name = $model_name AND model_version = $model_version AND run_date = $run_date
  AND status IN ('published', 'pruned')
ORDER BY version DESC
LIMIT 1
