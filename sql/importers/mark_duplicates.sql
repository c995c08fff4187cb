-- A catalog id that appears more than once in the same import batch: the first row (by file,
-- then line) is kept, the later ones are rejected as duplicate_id, naming the first line.
UPDATE import_typed AS t
SET reject_check = 'duplicate_id',
    reject_reason = $key_name || ' ' || CAST(t.{key} AS VARCHAR) || ' already appears at line '
        || CAST(d.first_line AS VARCHAR) || ' of ' || d.first_file
FROM (
    SELECT
        source_file, source_line,
        first_value(source_line) OVER w AS first_line,
        first_value(source_file) OVER w AS first_file,
        row_number() OVER w AS n
    FROM import_typed
    WHERE reject_reason IS NULL
    WINDOW w AS (PARTITION BY {key} ORDER BY source_file, source_line)
) AS d
WHERE t.source_file = d.source_file AND t.source_line = d.source_line AND d.n > 1;
