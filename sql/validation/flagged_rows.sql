-- The rows of a chunk's frame that any bad_* flag marks: their id ({id}: row_id, or the
-- catalog key) and every flag, lowest id first. A mapped job returns them; the coordinator
-- collects every chunk's (load_flagged.sql) and quarantines from them.
SELECT {id}, COLUMNS('^bad_')
FROM {frame}
WHERE greatest(*COLUMNS('^bad_'))
ORDER BY {id};
