-- One row per import run.
INSERT INTO loads (load_id, source_kind, source, started_at, finished_at, report)
VALUES ($load_id, $source_kind, $source, $started_at, $finished_at, $report);
