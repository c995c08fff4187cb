-- Classic MovieLens u.item (item_id|title|release_date|video_release_date|imdb_url|19 genre
-- flags) → the view import_items_typed (item_id, first_genre, release_year) that
-- importers/movielens_items.sql turns into catalog rows, coded exactly like the RecBole .item:
-- first_genre = the first genre whose flag is 1 (flags in file order, the same order RecBole
-- lists genres in), release_year from release_date ('01-Jan-1995').
CREATE OR REPLACE TEMP VIEW import_items_typed AS
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
)
SELECT * FROM typed;
