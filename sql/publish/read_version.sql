-- A version's rows for the scorer, ordered by item_id.
SELECT * FROM {table} ORDER BY item_id
