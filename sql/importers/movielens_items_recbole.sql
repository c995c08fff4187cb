-- RecBole .item (item_id, release_year, genres = class/genre token_seq) → the view
-- import_items_typed (item_id, first_genre = the FIRST genre, release_year), which
-- importers/movielens_items.sql turns into catalog rows. A release_year that is not a 4-digit
-- year (ml-100k has 'unkonwn') leaves release_year NULL (brand_id OOV) rather than rejecting
-- the movie: the field is a token, not a key.
CREATE OR REPLACE TEMP VIEW import_items_typed AS
WITH typed AS (
    SELECT
        source_file, source_line, raw,
        tarq_int(raw.item_id) AS item_id,
        nullif(split_part(trim(raw.genres), ' ', 1), '') AS first_genre,
        TRY_CAST(nullif(regexp_extract(trim(raw.release_year), '^([0-9]{4})$', 1), '') AS INTEGER)
            AS release_year
    FROM import_stage
)
SELECT * FROM typed;
