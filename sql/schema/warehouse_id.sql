-- The warehouse's identity (made by create_tables.sql). Fails when the table is missing:
-- a warehouse made before identities existed, adopted by opening it for writing.
SELECT value FROM warehouse_meta WHERE key = 'warehouse_id';
