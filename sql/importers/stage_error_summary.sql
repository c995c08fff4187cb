-- How many structural problems staging found, and the last line number seen in the file
-- (to tell a broken last line, i.e. a truncated file, from a broken line in the middle).
SELECT
    (SELECT count(*) FROM import_reject_errors) AS n_errors,
    greatest(
        (SELECT max(line) FROM import_reject_errors),
        (SELECT coalesce(max(source_line), 0) FROM import_stage)
    ) AS last_line;
