-- Versions left staged by an attempt that stopped between writing and switching.
SELECT version, table_name, export_path FROM semantic_id_versions
WHERE status = 'staged'
ORDER BY version
