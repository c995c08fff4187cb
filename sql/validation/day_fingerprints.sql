-- The days from $first_day to $last_day holding impressions or behaviours, with whether
-- their rows changed since the latest record in validated_days (row count or row-id checksum
-- of a table differs, or there is no record): `rows_changed`; whether the day is to be
-- validated again (`changed`: its rows changed or its latest verdict failed); and, when every
-- table's latest record is an operator's acceptance of the current rows, who accepted it,
-- when and why (`accepted_by`, `accepted_at`, `reason`). `last_run_id` is the run of the
-- latest record.
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
    SELECT table_name, day, n_rows, checksum, success, run_id, validated_at, accepted_by, reason
    FROM validated_days
    WHERE day BETWEEN $first_day AND $last_day
    QUALIFY row_number() OVER (PARTITION BY table_name, day ORDER BY validated_at DESC, run_id DESC) = 1
),
per_table AS (
    SELECT
        n.table_name,
        n.day,
        l.day IS NULL OR l.n_rows <> n.n_rows OR l.checksum <> n.checksum AS rows_changed,
        coalesce(l.success, false) AS success,
        l.run_id,
        l.validated_at,
        l.accepted_by,
        l.reason
    FROM now_fp AS n
    LEFT JOIN latest AS l ON l.table_name = n.table_name AND l.day = n.day
),
per_day AS (
    SELECT
        day,
        bool_or(rows_changed)                                   AS rows_changed,
        bool_or(rows_changed OR NOT success)                    AS changed,
        bool_and(NOT rows_changed AND accepted_by IS NOT NULL)  AS accepted,
        max(accepted_by)                                        AS accepted_by,
        max(validated_at) FILTER (WHERE accepted_by IS NOT NULL) AS accepted_at,
        max(reason)                                             AS reason,
        arg_max(run_id, validated_at)                           AS last_run_id
    FROM per_table
    GROUP BY day
)
SELECT
    day,
    rows_changed,
    changed,
    CASE WHEN accepted THEN accepted_by END AS accepted_by,
    CASE WHEN accepted THEN accepted_at END AS accepted_at,
    CASE WHEN accepted THEN reason END      AS reason,
    last_run_id
FROM per_day
ORDER BY day;
