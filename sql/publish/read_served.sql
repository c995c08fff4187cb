-- The served rows, ordered by item_id; the version column says which publication they are.
SELECT * FROM serving_item_ids ORDER BY item_id
