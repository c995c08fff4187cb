-- Record what one validation run checked: each (table, day) of $days with its rows now and
-- the run's verdict on that day ($failed_days: the days a table-level check failed on).
-- An operator's acceptance (tarq validate --accept-day) records the day's rows the same way,
-- with $accepted_by and $reason set (NULL for a validation run).
INSERT INTO validated_days (table_name, day, n_rows, checksum, run_id, success, validated_at,
                            accepted_by, reason)
WITH days AS (SELECT unnest($days::DATE[]) AS day),
tables AS (SELECT unnest(['impressions', 'behaviors']) AS table_name),
rows AS (
    SELECT 'impressions' AS table_name, ts::DATE AS day, row_id FROM impressions
    WHERE list_contains($days::DATE[], ts::DATE)
    UNION ALL
    SELECT 'behaviors', ts::DATE, row_id FROM behaviors
    WHERE list_contains($days::DATE[], ts::DATE)
),
fp AS (
    SELECT table_name, day, count(*) AS n_rows, bit_xor(hash(row_id)) AS checksum
    FROM rows
    GROUP BY table_name, day
)
SELECT
    t.table_name,
    d.day,
    coalesce(fp.n_rows, 0),
    coalesce(fp.checksum, 0::UBIGINT),
    $run_id,
    NOT list_contains($failed_days::DATE[], d.day),
    $now,
    $accepted_by::VARCHAR,
    $reason::VARCHAR
FROM days AS d
CROSS JOIN tables AS t
LEFT JOIN fp ON fp.table_name = t.table_name AND fp.day = d.day;
