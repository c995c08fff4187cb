-- One row per demo generation in the loads table, with its report.
INSERT INTO loads (load_id, source_kind, source, started_at, finished_at, report)
VALUES ($load_id, 'demo', $source, $started_at, $finished_at, $report::JSON)
