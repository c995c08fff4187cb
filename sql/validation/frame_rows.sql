-- The GX batch of a frame: its columns without the SQL bad_* flags, in row order.
SELECT COLUMNS(lambda c: NOT starts_with(c, 'bad_'))
FROM {frame};
