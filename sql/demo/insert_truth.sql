-- Append one chunk of the demo's ground truth (registered as demo_frame: the exposed rows of
-- the impressions chunk just inserted) to demo_truth.
INSERT INTO demo_truth (request_key, item_id, logit, user_part, hist_part, position_part, load_id)
SELECT request_key, item_id, logit, user_part, hist_part, position_part, $load_id
FROM demo_frame
