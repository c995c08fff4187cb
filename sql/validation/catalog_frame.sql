-- A catalog table (items or users) under check: every row's key. The whole table is checked
-- on each run because catalog rows carry no day. {frame} is the temp table to create.
CREATE OR REPLACE TEMP TABLE {frame} AS
SELECT {key}, {key} IS NULL AS {flag}
FROM {raw};
