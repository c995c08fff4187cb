-- The switch, part 1: the staged version becomes published.
UPDATE semantic_id_versions SET status = 'published', published_at = $published_at
WHERE version = $version
