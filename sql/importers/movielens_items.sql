-- MovieLens items of either format (import_items_typed: item_id, first_genre, release_year,
-- from movielens_items_classic.sql or movielens_items_recbole.sql) → catalog rows:
-- category_id = stable code of the first genre, brand_id = stable code of the release decade
-- ('1990s'), price NULL. A movie without a readable year gets brand_id NULL (OOV).
CREATE OR REPLACE TEMP TABLE import_typed AS
WITH checked AS (
    SELECT
        *,
        tarq_missing('item_id', raw.item_id) AS null_reason,
        tarq_bad('item_id', raw.item_id, item_id, 'an integer id') AS cast_reason
    FROM import_items_typed
)
SELECT
    source_file, source_line, raw,
    item_id,
    tarq_code(first_genre) AS category_id,
    tarq_code(CAST(release_year // 10 * 10 AS VARCHAR) || 's') AS brand_id,
    CAST(NULL AS DOUBLE) AS price,
    tarq_reject_check(null_reason, cast_reason) AS reject_check,
    tarq_reject_reason(null_reason, cast_reason) AS reject_reason
FROM checked;
