-- Rows and bytes of one written Parquet file.
SELECT num_rows, file_size_bytes FROM parquet_file_metadata($path)
