-- The catalog under check (items): every row's key and price_ok, NULL for a missing price
-- (the model's OOV bucket), else whether the price is a finite number >= 0 (NaN, ±inf and
-- negative prices cannot be bucketed). The whole table is checked on each run because catalog
-- rows carry no day.
CREATE OR REPLACE TEMP TABLE validation_items AS
SELECT
    item_id,
    CASE WHEN price IS NOT NULL THEN isfinite(price) AND price >= 0 END AS price_ok,
    coalesce(NOT (isfinite(price) AND price >= 0), false)              AS bad_price_valid
FROM items;
