-- Classic MovieLens u.item (item_id|title|release_date|video_release_date|imdb_url|19 genre
-- flags) → catalog rows, coded exactly like the RecBole .item: category_id = stable code of the
-- first genre whose flag is 1 (flags in file order, the same order RecBole lists genres in),
-- brand_id = stable code of the release decade taken from release_date ('01-Jan-1995').
CREATE OR REPLACE TEMP TABLE import_typed AS
WITH typed AS (
    SELECT
        source_file, source_line, raw,
        tarq_int(raw.item_id) AS item_id,
        CASE
            WHEN trim(raw.genre_unknown) = '1' THEN 'unknown'
            WHEN trim(raw.genre_action) = '1' THEN 'Action'
            WHEN trim(raw.genre_adventure) = '1' THEN 'Adventure'
            WHEN trim(raw.genre_animation) = '1' THEN 'Animation'
            WHEN trim(raw.genre_childrens) = '1' THEN 'Children''s'
            WHEN trim(raw.genre_comedy) = '1' THEN 'Comedy'
            WHEN trim(raw.genre_crime) = '1' THEN 'Crime'
            WHEN trim(raw.genre_documentary) = '1' THEN 'Documentary'
            WHEN trim(raw.genre_drama) = '1' THEN 'Drama'
            WHEN trim(raw.genre_fantasy) = '1' THEN 'Fantasy'
            WHEN trim(raw.genre_film_noir) = '1' THEN 'Film-Noir'
            WHEN trim(raw.genre_horror) = '1' THEN 'Horror'
            WHEN trim(raw.genre_musical) = '1' THEN 'Musical'
            WHEN trim(raw.genre_mystery) = '1' THEN 'Mystery'
            WHEN trim(raw.genre_romance) = '1' THEN 'Romance'
            WHEN trim(raw.genre_sci_fi) = '1' THEN 'Sci-Fi'
            WHEN trim(raw.genre_thriller) = '1' THEN 'Thriller'
            WHEN trim(raw.genre_war) = '1' THEN 'War'
            WHEN trim(raw.genre_western) = '1' THEN 'Western'
        END AS first_genre,
        TRY_CAST(nullif(regexp_extract(trim(raw.release_date), '([0-9]{4})$', 1), '') AS INTEGER)
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
