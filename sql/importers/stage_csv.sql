-- Stage one delimited text file as raw strings: one row per data line with its 1-based line
-- number in the file and the fields as a struct (raw). No type inference: every field stays
-- text so that nothing is lost before the typed step decides what to reject.
-- Structural problems (wrong field count, bad encoding, unterminated quotes) are collected
-- in import_reject_errors; the importer turns them into an error naming file and line.
-- Line numbers assume no field spans lines (true for the supported formats).
CREATE OR REPLACE TEMP TABLE import_stage AS
SELECT
    $source AS source_file,
    row_number() OVER () + $skip AS source_line,
    r AS raw
FROM read_csv(
    $path,
    auto_detect = false,
    columns = $columns,
    header = false,
    skip = $skip,
    delim = $delim,
    quote = $quote,
    escape = $quote,
    encoding = $encoding,
    strict_mode = true,
    null_padding = false,
    store_rejects = true,
    rejects_table = 'import_reject_errors',
    rejects_scan = 'import_reject_scans'
) AS r;
