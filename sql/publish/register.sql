-- Record a new publication attempt as staged.
INSERT INTO semantic_id_versions (
    version, table_name, model_name, model_version, run_date, model_uri, model_sha256,
    ids_sha256, n_items, m, k, dim, status, created_at)
VALUES ($version, $table_name, $model_name, $model_version, $run_date, $model_uri,
        $model_sha256, $ids_sha256, $n_items, $m, $k, $dim, 'staged', $created_at)
