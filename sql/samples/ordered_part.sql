-- One bucket's rows of one split, in row_id order: DuckDB's partitioned COPY writes its parts in
-- thread order, so the same warehouse gave sample files in a different order each build (and the
-- seeded shuffle different batches). Re-written ordered, the same logs give the same bytes.
-- (The files hold no `split` column: PARTITION_BY keeps it in the folder names, which are not
-- read as columns, so no key=value folder above the output can add one either.)
SELECT * FROM read_parquet($files, hive_partitioning = false) ORDER BY row_id
