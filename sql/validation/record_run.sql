-- One row per validation run; a run id given again (a retried flow task) replaces its row.
INSERT INTO validation_runs (run_id, run_date, check_day, started_at, finished_at, success, summary)
VALUES ($run_id, $run_date, $check_day, $started_at, $finished_at, $success, $summary::JSON)
ON CONFLICT (run_id) DO UPDATE SET
    run_date = excluded.run_date,
    check_day = excluded.check_day,
    started_at = excluded.started_at,
    finished_at = excluded.finished_at,
    success = excluded.success,
    summary = excluded.summary;
