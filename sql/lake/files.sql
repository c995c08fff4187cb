-- The committed files of one log table, in the order they were written.
SELECT path FROM lake_files WHERE table_name = $table_name ORDER BY written_at, path
