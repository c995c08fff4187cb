-- Record what one validation run checked: each (table, day) with the rows it had when the run
-- read them (day_rows.sql: $tables, $days, $n_rows, $checksums, one entry per (table, day))
-- and the run's verdict on that day ($failed_days: the days a table-level check failed on).
-- An operator's acceptance (tarq validate --accept-day) records the day's current rows the
-- same way, with $accepted_by and $reason set (NULL for a validation run).
INSERT INTO validated_days (table_name, day, n_rows, checksum, run_id, success, validated_at,
                            accepted_by, reason)
SELECT
    table_name,
    day,
    n_rows,
    checksum,
    $run_id,
    NOT list_contains($failed_days::DATE[], day),
    $now,
    $accepted_by::VARCHAR,
    $reason::VARCHAR
FROM (
    SELECT
        unnest($tables::VARCHAR[])    AS table_name,
        unnest($days::DATE[])         AS day,
        unnest($n_rows::BIGINT[])     AS n_rows,
        unnest($checksums::UBIGINT[]) AS checksum
);
