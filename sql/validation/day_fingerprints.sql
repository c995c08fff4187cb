-- The days from $first_day to $last_day holding impressions or behaviours, with each table's
-- row count and row-id checksum now, and whether that differs from the latest record in
-- validated_days (or the latest record failed, or there is none): `changed`.
WITH rows AS (
    SELECT 'impressions' AS table_name, ts::DATE AS day, row_id FROM impressions
    WHERE ts >= $first_day::TIMESTAMP AND ts < $last_day::TIMESTAMP + INTERVAL 1 DAY
    UNION ALL
    SELECT 'behaviors', ts::DATE, row_id FROM behaviors
    WHERE ts >= $first_day::TIMESTAMP AND ts < $last_day::TIMESTAMP + INTERVAL 1 DAY
),
now_fp AS (
    SELECT table_name, day, count(*) AS n_rows, bit_xor(hash(row_id)) AS checksum
    FROM rows
    GROUP BY table_name, day
),
latest AS (
    SELECT table_name, day, n_rows, checksum, success
    FROM validated_days
    WHERE day BETWEEN $first_day AND $last_day
    QUALIFY row_number() OVER (PARTITION BY table_name, day ORDER BY validated_at DESC, run_id DESC) = 1
),
per_table AS (
    SELECT
        n.table_name,
        n.day,
        n.n_rows,
        n.checksum,
        l.day IS NULL OR NOT l.success OR l.n_rows <> n.n_rows OR l.checksum <> n.checksum
            AS changed
    FROM now_fp AS n
    LEFT JOIN latest AS l ON l.table_name = n.table_name AND l.day = n.day
)
SELECT day, bool_or(changed) AS changed
FROM per_table
GROUP BY day
ORDER BY day;
