-- Append the good rows of the staged file to impressions (the raw table, or in lake layout its
-- landing table; append-only log; exact repeats of earlier loads are validation's
-- business, not the importer's).
INSERT INTO {target} (user_id, item_id, ts, clicked, exposed, position, request_id, load_id)
SELECT user_id, item_id, ts, clicked, exposed, position, request_id, $load_id
FROM import_typed
WHERE reject_reason IS NULL
ORDER BY source_file, source_line;
