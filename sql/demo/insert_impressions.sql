-- Append one chunk of demo impressions (registered as demo_frame) to the raw table, or in
-- lake layout its landing table. row_id comes from the table's sequence; the 64-bit request
-- key becomes a 16-hex-digit request id.
INSERT INTO {target} (user_id, item_id, ts, clicked, exposed, position, request_id, load_id)
SELECT user_id, item_id, ts, clicked, exposed, position,
       printf('%016x', request_key) AS request_id, $load_id
FROM demo_frame
