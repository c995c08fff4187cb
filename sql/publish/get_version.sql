-- One publication's registry row.
SELECT version, table_name, model_name, model_version, run_date, model_uri, model_sha256,
       ids_sha256, n_items, m, k, dim, status, note, created_at, published_at, export_path
FROM semantic_id_versions
WHERE version = $version
