-- Record where a version was exported to and its manifest.
UPDATE semantic_id_versions SET export_path = $export_path, manifest = $manifest
WHERE version = $version
