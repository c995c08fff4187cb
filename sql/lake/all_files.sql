-- Every committed file of the lake.
SELECT path FROM lake_files
