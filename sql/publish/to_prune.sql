-- Published versions beyond the newest $keep, never the served one: their tables go.
SELECT version, table_name
FROM semantic_id_versions
WHERE status = 'published'
  AND version NOT IN (SELECT version FROM serving_state)
  AND version NOT IN (
      SELECT version FROM semantic_id_versions WHERE status = 'published'
      ORDER BY version DESC LIMIT $keep)
ORDER BY version
