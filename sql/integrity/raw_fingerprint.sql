-- Row count and order-independent checksum of every raw table, per load: the proof that a
-- job (or a fault in it) left the append-only logs as they were. hash(t) hashes the whole
-- row, so a changed value, a lost row or an extra row changes the sum of its load (adding a
-- side-feature column to items/users changes every row of them, and so their checksums).
WITH per_load AS (
    SELECT 'items' AS table_name, load_id, count(*) AS n_rows, sum(hash(t)) AS checksum
    FROM items AS t GROUP BY load_id
    UNION ALL
    SELECT 'users', load_id, count(*), sum(hash(t)) FROM users AS t GROUP BY load_id
    UNION ALL
    SELECT 'impressions', load_id, count(*), sum(hash(t)) FROM impressions AS t GROUP BY load_id
    UNION ALL
    SELECT 'behaviors', load_id, count(*), sum(hash(t)) FROM behaviors AS t GROUP BY load_id
)
SELECT table_name, load_id, n_rows, CAST(checksum AS VARCHAR) AS checksum
FROM per_load
ORDER BY table_name, load_id NULLS FIRST;
