-- The lake's URL, when the warehouse is in lake layout (no row otherwise).
SELECT value FROM warehouse_meta WHERE key = 'lake'
