-- Export one version to Parquet (ordered by item_id, so the file's checksum is reproducible).
COPY (SELECT * FROM {table} ORDER BY item_id) TO $path (FORMAT parquet, COMPRESSION zstd)
