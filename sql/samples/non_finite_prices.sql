-- Catalog items whose price is inf, -inf or NaN (stored before the importer rejected such
-- values; the catalog is append-only, so they cannot be fixed): they get the unknown bucket.
SELECT count(*) AS items FROM items WHERE NOT isfinite(price)
