-- Turn an empty warehouse into lake layout (tarq.data.lake.init_lake, which checks that the
-- raw log tables hold no row first: raw rows are never moved). Loads insert into the landing
-- tables (same columns, same row_id sequences as the raw tables, so row ids stay unique and
-- increasing across loads) and flush them to Parquet files before they commit; the views
-- impressions/behaviors (lake/view_*) read the landing rows and the committed files.
CREATE TABLE lake_landing_impressions (
    row_id       BIGINT DEFAULT nextval('impressions_row_id_seq'),
    user_id      BIGINT,
    item_id      BIGINT,
    ts           TIMESTAMP,
    clicked      BOOLEAN,
    exposed      BOOLEAN,
    position     INTEGER,
    request_id   VARCHAR,
    load_id      VARCHAR
);

CREATE TABLE lake_landing_behaviors (
    row_id       BIGINT DEFAULT nextval('behaviors_row_id_seq'),
    user_id      BIGINT,
    ts           TIMESTAMP,
    item_id      BIGINT,
    category_id  BIGINT,
    brand_id     BIGINT,
    action       VARCHAR,
    load_id      VARCHAR
);

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
