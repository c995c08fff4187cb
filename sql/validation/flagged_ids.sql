-- The row ids one bad_* flag marks, lowest first (compared with the row ids GX reports as
-- unexpected; $limit caps the list when GX only returned a summary).
SELECT {id}
FROM {frame}
WHERE {flag}
ORDER BY {id}
LIMIT $limit;
