-- One bucket's rows of one split, in row_id order: DuckDB's partitioned COPY writes its parts in
-- thread order, so the same warehouse gave sample files in a different order each build (and the
-- seeded shuffle different batches). Re-written ordered, the same logs give the same bytes.
SELECT * EXCLUDE (split) FROM read_parquet($files, hive_partitioning = true) ORDER BY row_id
