-- Contract vs. actual columns of the raw tables. The contract (table_name, column_name,
-- data_type) is registered by the caller as validation_contract, read from the DDL in
-- sql/schema/create_tables.sql. status: ok | side_feature (extra column declared in
-- feature_spec) | unregistered (extra column not declared) | missing | retyped.
WITH actual AS (
    SELECT table_name, column_name, data_type
    FROM information_schema.columns
    WHERE table_schema = 'main' AND table_catalog = current_database()
      AND table_name IN (SELECT DISTINCT table_name FROM validation_contract)
),
joined AS (
    SELECT
        coalesce(c.table_name, a.table_name)   AS table_name,
        coalesce(c.column_name, a.column_name) AS column_name,
        c.data_type                            AS expected_type,
        a.data_type                            AS actual_type,
        c.column_name IS NOT NULL              AS in_contract
    FROM validation_contract AS c
    FULL OUTER JOIN actual AS a
        ON a.table_name = c.table_name AND a.column_name = c.column_name
)
SELECT
    j.table_name,
    j.column_name,
    j.expected_type,
    j.actual_type,
    CASE
        WHEN j.in_contract AND j.actual_type IS NULL THEN 'missing'
        WHEN j.in_contract AND j.actual_type <> j.expected_type THEN 'retyped'
        WHEN j.in_contract THEN 'ok'
        WHEN fs.column_name IS NOT NULL THEN 'side_feature'
        ELSE 'unregistered'
    END AS status
FROM joined AS j
LEFT JOIN feature_spec AS fs
    ON fs.table_name = j.table_name AND fs.column_name = j.column_name
ORDER BY j.table_name, j.column_name;
