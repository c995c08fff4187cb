-- How many loads, validation runs and sample builds the warehouse has recorded: a refused
-- import leaves no loads row behind, a run stopped before validation no validation run.
SELECT
    (SELECT count(*) FROM loads) AS loads,
    (SELECT count(*) FROM validation_runs) AS validation_runs,
    (SELECT count(*) FROM sample_builds) AS sample_builds;
