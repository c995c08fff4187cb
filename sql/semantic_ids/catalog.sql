-- The item catalog with the model's item features, one row per item, ordered by item_id: all
-- of it ($lo and $hi NULL), or the items $lo .. $hi (inclusive; one chunk of a mapped run).
-- Features are selected exactly as in samples/rows.sql (every item column but the bookkeeping
-- ones, price as price_bucket) so that catalog encoding and training see the same inputs.
-- Items never shown and items added after training are included: their unseen ids map to OOV.
SELECT
    it.* EXCLUDE (load_id, price),
    -- As in samples/rows.sql: a non-finite price is an unknown price, not a failure.
    price_bucket(CASE WHEN isfinite(it.price) THEN it.price END) AS price_bucket
FROM items AS it
WHERE ($lo IS NULL OR it.item_id >= $lo) AND ($hi IS NULL OR it.item_id <= $hi)
ORDER BY it.item_id
