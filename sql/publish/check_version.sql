-- Row-level checks of a written version against the catalog, before it may be served.
SELECT
    (SELECT count(*) FROM {table}) AS n_rows,
    (SELECT count(DISTINCT item_id) FROM {table}) AS n_distinct,
    (SELECT count(*) FROM items) AS catalog_size,
    (SELECT count(*) FROM items AS i WHERE NOT EXISTS (
        SELECT 1 FROM {table} AS t WHERE t.item_id = i.item_id)) AS missing_items,
    (SELECT count(*) FROM {table} AS t WHERE NOT EXISTS (
        SELECT 1 FROM items AS i WHERE i.item_id = t.item_id)) AS unknown_items,
    (SELECT count(*) FROM {table} WHERE item_id IS NULL) AS null_item_ids,
    (SELECT count(*) FROM {table} WHERE v_item IS NULL
        OR len(v_item::FLOAT[]) <> $dim) AS bad_vectors,
    -- A sum is non-finite iff an element is NaN/inf (or it overflows, which is as bad).
    (SELECT count(*) FROM {table} WHERE NOT isfinite(list_sum(v_item::FLOAT[]))) AS nonfinite_vectors
