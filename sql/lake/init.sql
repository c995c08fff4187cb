-- Turn an empty warehouse into lake layout (tarq.data.lake.init_lake, which checks that the
-- raw log tables hold no row first: raw rows are never moved). Loads insert into the landing
-- tables (same columns, same row_id sequences as the raw tables, so row ids stay unique and
-- increasing across loads) and flush them to Parquet files before they commit; the views
-- impressions/behaviors (lake/view_*) read the landing rows and the committed files.
-- The landing tables are copied from the contract's tables (sql/schema/create_tables.sql), so
-- their columns cannot drift apart; CTAS copies no defaults, so row_id's is set again.
CREATE TABLE lake_landing_impressions AS SELECT * FROM impressions LIMIT 0;
ALTER TABLE lake_landing_impressions ALTER COLUMN row_id SET DEFAULT nextval('impressions_row_id_seq');
CREATE TABLE lake_landing_behaviors AS SELECT * FROM behaviors LIMIT 0;
ALTER TABLE lake_landing_behaviors ALTER COLUMN row_id SET DEFAULT nextval('behaviors_row_id_seq');

-- The manifest: the committed files of the lake, one row each. A file is part of the logs
-- exactly when its row here is committed; a file under the lake without a row is an orphan
-- of a load that rolled back (never read, never deleted automatically).
CREATE TABLE lake_files (
    table_name   VARCHAR NOT NULL,
    day          DATE,
    path         VARCHAR PRIMARY KEY,
    load_id      VARCHAR NOT NULL,
    rows         BIGINT NOT NULL,
    bytes        BIGINT NOT NULL,
    written_at   TIMESTAMP NOT NULL
);

DROP TABLE impressions;
DROP TABLE behaviors;
