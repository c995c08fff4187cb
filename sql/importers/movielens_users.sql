-- MovieLens users (u.user or RecBole .user: user_id, age, gender, occupation, zip_code) →
-- user rows with side features as BIGINT codes:
--   age_bucket: the MovieLens-1M age groups (1: <18, 18: 18-24, 25: 25-34, 35: 35-44,
--               45: 45-49, 50: 50-55, 56: 56+), so raw ages (100k) and ML-1M's already
--               bucketed ages land on the same codes;
--   gender, occupation, zip3 (first three zip characters): stable codes of the strings.
CREATE OR REPLACE TEMP TABLE import_typed AS
WITH typed AS (
    SELECT
        source_file, source_line, raw,
        tarq_int(raw.user_id) AS user_id,
        tarq_int(raw.age) AS age,
        nullif(trim(raw.gender), '') AS gender_raw,
        nullif(trim(raw.occupation), '') AS occupation_raw,
        nullif(left(trim(raw.zip_code), 3), '') AS zip3_raw
    FROM import_stage
), checked AS (
    SELECT
        *,
        tarq_missing('user_id', raw.user_id) AS null_reason,
        nullif(concat_ws('; ',
            tarq_bad('user_id', raw.user_id, user_id, 'an integer id'),
            tarq_bad('age', raw.age, age, 'an integer')), '') AS cast_reason
    FROM typed
)
SELECT
    source_file, source_line, raw,
    user_id,
    CASE
        WHEN age IS NULL THEN NULL
        WHEN age < 18 THEN 1
        WHEN age < 25 THEN 18
        WHEN age < 35 THEN 25
        WHEN age < 45 THEN 35
        WHEN age < 50 THEN 45
        WHEN age < 56 THEN 50
        ELSE 56
    END::BIGINT AS age_bucket,
    tarq_code(gender_raw) AS gender,
    tarq_code(occupation_raw) AS occupation,
    tarq_code(zip3_raw) AS zip3,
    tarq_reject_check(null_reason, cast_reason) AS reject_check,
    tarq_reject_reason(null_reason, cast_reason) AS reject_reason
FROM checked;
