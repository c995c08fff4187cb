-- Add one numeric side feature; a non-empty value that is not a number rejects the row.
CREATE OR REPLACE TEMP TABLE import_typed AS
WITH v AS (
    SELECT *, nullif(trim(raw_json->>$key), '') AS side_raw FROM import_typed
)
SELECT
    * EXCLUDE (side_raw, reject_check, reject_reason),
    TRY_CAST(side_raw AS DOUBLE) AS {col},
    CASE WHEN reject_check IS NULL AND side_raw IS NOT NULL AND TRY_CAST(side_raw AS DOUBLE) IS NULL
         THEN 'type_cast' ELSE reject_check END AS reject_check,
    nullif(concat_ws('; ', reject_reason,
        tarq_bad($key, side_raw, TRY_CAST(side_raw AS DOUBLE), 'a number')), '') AS reject_reason
FROM v;
