-- Rows of {raw} per checked day of $days, and (day NULL) the rows that belong to no day: what
-- the row-level checks plan their chunks from (whole days, each chunk at most
-- ValidationBounds.max_chunk_rows rows unless one day alone holds more).
SELECT ts::DATE AS day, count(*) AS n_rows
FROM {raw}
WHERE list_contains($days::DATE[], ts::DATE) OR ts IS NULL
GROUP BY ts::DATE
ORDER BY day NULLS LAST;
