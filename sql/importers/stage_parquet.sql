-- Stage Parquet file(s) with the row's file and 1-based row number in that file; the row's
-- columns (typed as stored) go in the raw struct. Parts are matched by column name
-- (union_by_name): by default DuckDB casts every part to the first part's types, which
-- rounds a DOUBLE 1.5 into a BIGINT id. The importer has checked that all parts have the same
-- columns, so no column is filled in with NULL here.
CREATE OR REPLACE TEMP TABLE import_stage AS
SELECT
    filename AS source_file,
    file_row_number + 1 AS source_line,
    r AS raw
FROM read_parquet($paths, union_by_name = true) AS r;
