-- A shuffled bucket without rows of {table}: an empty temp table with its columns.
CREATE OR REPLACE TEMP TABLE {target} AS SELECT * FROM {table} LIMIT 0
