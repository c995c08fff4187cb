-- A shuffled bucket's rows of one log table (shuffle.sql's files of this bucket), as the temp
-- table rows.sql reads instead of the log table. (A temp table, not a view: a view's stored
-- text cannot hold the bound file list.)
CREATE OR REPLACE TEMP TABLE {target} AS SELECT * FROM read_parquet($files, hive_partitioning = false)
