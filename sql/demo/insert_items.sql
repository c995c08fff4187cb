-- Append the demo catalog (registered as demo_frame; side columns by name).
INSERT INTO items BY NAME
SELECT item_id, category_id, brand_id, price, shop_id, $load_id AS load_id
FROM demo_frame
