-- Every demo load of the warehouse with its report, oldest first: the generated window and
-- the days appended to it (tarq.data.demo.append_days reads which days exist from them).
SELECT load_id, report::VARCHAR AS report
FROM loads
WHERE source_kind = 'demo'
ORDER BY started_at, load_id
