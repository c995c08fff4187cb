-- One row per sample build (run metadata).
INSERT INTO sample_builds (build_id, run_date, train_start, test_day, out_dir, created_at, report)
VALUES ($build_id, $run_date::DATE, $train_start::DATE, $test_day::DATE, $out_dir,
        current_timestamp, $report::JSON)
