-- The next publication version (versions are never reused, even after a failed attempt).
SELECT coalesce(max(version), 0) + 1 AS version FROM semantic_id_versions
