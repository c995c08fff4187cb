-- behaviors in lake layout while no file is committed: the landing rows only.
CREATE OR REPLACE VIEW behaviors AS
SELECT row_id, user_id, ts, item_id, category_id, brand_id, action, load_id
FROM lake_landing_behaviors
