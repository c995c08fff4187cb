-- impressions in lake layout while no file is committed: the landing rows only.
CREATE OR REPLACE VIEW impressions AS
SELECT row_id, user_id, item_id, ts, clicked, exposed, position, request_id, load_id
FROM lake_landing_impressions
