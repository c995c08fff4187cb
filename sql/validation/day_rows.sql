-- The rows of impressions and behaviours of each day of $days now, per (table, day): count and
-- an order-free checksum of their row ids (0 and 0 for a day without rows). A validation run
-- reads them when it plans, before its jobs read the rows, and records them with its verdict
-- (record_days.sql): rows that arrive while it runs make the day count as changed next time.
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
    coalesce(fp.n_rows, 0)            AS n_rows,
    coalesce(fp.checksum, 0::UBIGINT) AS checksum
FROM days AS d
CROSS JOIN tables AS t
LEFT JOIN fp ON fp.table_name = t.table_name AND fp.day = d.day
ORDER BY d.day, t.table_name;
