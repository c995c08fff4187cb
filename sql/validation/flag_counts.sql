-- A frame's row count, how many rows any bad_* flag marks, and how many each flag marks
-- (one column per flag, named like the flag).
SELECT
    count(*)                                         AS n_rows,
    count_if(greatest(*COLUMNS('^bad_')))            AS n_flagged,
    CAST(sum(COLUMNS('^bad_')::INTEGER) AS BIGINT)
FROM {frame};
