-- Add one numeric side feature; a non-empty value that is not a number rejects the row
-- (type_cast), and so does inf, -inf or NaN (non_finite) unless the row is rejected already.
CREATE OR REPLACE TEMP TABLE import_typed AS
WITH v AS (
    SELECT *, nullif(trim(raw_json->>$key), '') AS side_raw FROM import_typed
), r AS (
    SELECT
        *,
        tarq_bad($key, side_raw, tarq_double(side_raw), 'a number') AS side_cast,
        tarq_nonfinite($key, side_raw) AS side_finite
    FROM v
)
SELECT
    * EXCLUDE (side_raw, side_cast, side_finite, reject_check, reject_reason),
    tarq_double(side_raw) AS {col},
    CASE WHEN reject_check IS NOT NULL THEN reject_check
         WHEN side_cast IS NOT NULL THEN 'type_cast'
         WHEN side_finite IS NOT NULL THEN 'non_finite' END AS reject_check,
    nullif(concat_ws('; ', reject_reason, side_cast, side_finite), '') AS reject_reason
FROM r;
