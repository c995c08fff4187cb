-- Append one chunk of demo behaviours (registered as demo_frame); row_id from the sequence.
INSERT INTO behaviors (user_id, ts, item_id, category_id, brand_id, action, load_id)
SELECT user_id, ts, item_id, category_id, brand_id, action, $load_id
FROM demo_frame
