-- Keep the rows of this chunk's frame that any bad_* flag marks (with their flags), before the
-- next chunk replaces the frame.
INSERT INTO {flagged}
SELECT * FROM {frame} WHERE greatest(*COLUMNS('^bad_'));
