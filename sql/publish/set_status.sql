-- Change a publication's status, with a note saying why.
UPDATE semantic_id_versions SET status = $status, note = $note WHERE version = $version
