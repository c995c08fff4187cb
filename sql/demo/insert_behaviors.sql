-- Append one chunk of demo behaviours (registered as demo_frame) to the raw table, or in
-- lake layout its landing table; row_id from the sequence.
INSERT INTO {target} (user_id, ts, item_id, category_id, brand_id, action, load_id)
SELECT user_id, ts, item_id, category_id, brand_id, action, $load_id
FROM demo_frame
