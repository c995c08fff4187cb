-- The chunks of a mapped assignment: consecutive runs of $chunk_size items in item_id order
-- (the batches the single pass reads), as (first item id, last item id, items).
SELECT min(item_id) AS lo, max(item_id) AS hi, count(*) AS n
FROM (
    SELECT item_id, (row_number() OVER (ORDER BY item_id) - 1) // $chunk_size AS chunk
    FROM items
)
GROUP BY chunk
ORDER BY chunk
