-- RecBole .item (item_id, release_year, genres = class/genre token_seq) → catalog rows.
-- category_id = stable code of the FIRST genre; brand_id = stable code of the release decade
-- ('1990s'); price NULL. A release_year that is not a 4-digit year (ml-100k has 'unkonwn')
-- leaves brand_id NULL (OOV) rather than rejecting the movie: the field is a token, not a key.
CREATE OR REPLACE TEMP TABLE import_typed AS
WITH typed AS (
    SELECT
        source_file, source_line, raw,
        tarq_int(raw.item_id) AS item_id,
        nullif(split_part(trim(raw.genres), ' ', 1), '') AS first_genre,
        TRY_CAST(nullif(regexp_extract(trim(raw.release_year), '^([0-9]{4})$', 1), '') AS INTEGER)
            AS release_year
    FROM import_stage
), checked AS (
    SELECT
        *,
        tarq_missing('item_id', raw.item_id) AS null_reason,
        tarq_bad('item_id', raw.item_id, item_id, 'an integer id') AS cast_reason
    FROM typed
)
SELECT
    source_file, source_line, raw,
    item_id,
    tarq_code(first_genre) AS category_id,
    tarq_code(CAST(release_year // 10 * 10 AS VARCHAR) || 's') AS brand_id,
    CAST(NULL AS DOUBLE) AS price,
    CASE WHEN null_reason IS NOT NULL THEN 'null_key'
         WHEN cast_reason IS NOT NULL THEN 'type_cast' END AS reject_check,
    nullif(concat_ws('; ', null_reason, cast_reason), '') AS reject_reason
FROM checked;
