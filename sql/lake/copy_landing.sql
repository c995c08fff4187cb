-- Write the landing rows of one log table as Parquet under $dir, one folder per day
-- (day=YYYY-MM-DD; a NULL ts goes to day=__HIVE_DEFAULT_PARTITION__, to be quarantined by
-- validation like any other bad row). The day is the folder's name, not a column.
COPY (
    SELECT *, CAST(ts AS DATE) AS day FROM {landing} ORDER BY row_id
) TO $dir (
    FORMAT parquet, COMPRESSION zstd, PARTITION_BY (day), FILENAME_PATTERN $pattern,
    WRITE_PARTITION_COLUMNS false
)
