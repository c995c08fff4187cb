-- One committed file in the manifest (it commits with the load that wrote it).
INSERT INTO lake_files (table_name, day, path, load_id, rows, bytes, written_at)
VALUES ($table_name, $day, $path, $load_id, $rows, $bytes, $written_at)
