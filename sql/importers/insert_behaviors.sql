-- Append the good rows of the staged file to behaviors (the raw table, or in lake layout its
-- landing table; append-only log).
INSERT INTO {target} (user_id, ts, item_id, category_id, brand_id, action, load_id)
SELECT user_id, ts, item_id, category_id, brand_id, action, $load_id
FROM import_typed
WHERE reject_reason IS NULL
ORDER BY source_file, source_line;
