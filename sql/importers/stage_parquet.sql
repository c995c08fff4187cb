-- Stage Parquet file(s) with the row's file and 1-based row number in that file; the row's
-- columns (typed as stored) go in the raw struct.
CREATE OR REPLACE TEMP TABLE import_stage AS
SELECT
    filename AS source_file,
    file_row_number + 1 AS source_line,
    r AS raw
FROM read_parquet($paths) AS r;
