-- The warehouse schema (README "Data contract"). Raw tables are append-only: the job
-- inserts rows and never updates or deletes them. Key columns stay nullable on purpose so
-- that a bad row can land, be caught by validation and be quarantined with its reason
-- instead of failing a whole load; items/users keep their primary keys (the catalog and the
-- user table are keyed by contract), and importers skip ids that are already present.

CREATE SEQUENCE IF NOT EXISTS impressions_row_id_seq START 1;
CREATE SEQUENCE IF NOT EXISTS behaviors_row_id_seq START 1;

CREATE TABLE IF NOT EXISTS items (
    item_id      BIGINT PRIMARY KEY,
    category_id  BIGINT,
    brand_id     BIGINT,
    price        DOUBLE,
    load_id      VARCHAR
);

CREATE TABLE IF NOT EXISTS users (
    user_id      BIGINT PRIMARY KEY,
    load_id      VARCHAR
);

-- In lake layout (tarq.data.lake) impressions and behaviors are views of these names over
-- the lake's Parquet files; IF NOT EXISTS leaves a view of the name alone.
CREATE TABLE IF NOT EXISTS impressions (
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

CREATE TABLE IF NOT EXISTS behaviors (
    row_id       BIGINT DEFAULT nextval('behaviors_row_id_seq'),
    user_id      BIGINT,
    ts           TIMESTAMP,
    item_id      BIGINT,
    category_id  BIGINT,
    brand_id     BIGINT,
    action       VARCHAR,
    load_id      VARCHAR
);

-- Rows that failed an import (type cast, missing key) or a row-level validation check.
-- raw_row holds the offending row as JSON, exactly as it was read or stored; row_id points
-- at the raw row when it is in the raw table (validation), NULL when it never got there
-- (import rejects). A row is excluded from samples when its row_id is quarantined.
CREATE TABLE IF NOT EXISTS quarantine_items (
    item_id BIGINT, row_id BIGINT, run_id VARCHAR, stage VARCHAR, check_name VARCHAR,
    reason VARCHAR, source VARCHAR, source_line BIGINT, raw_row JSON,
    quarantined_at TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS quarantine_users (
    user_id BIGINT, row_id BIGINT, run_id VARCHAR, stage VARCHAR, check_name VARCHAR,
    reason VARCHAR, source VARCHAR, source_line BIGINT, raw_row JSON,
    quarantined_at TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS quarantine_impressions (
    row_id BIGINT, run_id VARCHAR, stage VARCHAR, check_name VARCHAR,
    reason VARCHAR, source VARCHAR, source_line BIGINT, raw_row JSON,
    quarantined_at TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS quarantine_behaviors (
    row_id BIGINT, run_id VARCHAR, stage VARCHAR, check_name VARCHAR,
    reason VARCHAR, source VARCHAR, source_line BIGINT, raw_row JSON,
    quarantined_at TIMESTAMP DEFAULT current_timestamp
);

-- Run metadata: one row per load, validation and sample build.
CREATE TABLE IF NOT EXISTS loads (
    load_id      VARCHAR PRIMARY KEY,
    source_kind  VARCHAR,
    source       VARCHAR,
    started_at   TIMESTAMP,
    finished_at  TIMESTAMP,
    report       JSON
);

CREATE TABLE IF NOT EXISTS validation_runs (
    run_id       VARCHAR PRIMARY KEY,
    run_date     DATE,
    check_day    DATE,
    started_at   TIMESTAMP,
    finished_at  TIMESTAMP,
    success      BOOLEAN,
    summary      JSON
);

CREATE TABLE IF NOT EXISTS sample_builds (
    build_id     VARCHAR PRIMARY KEY,
    run_date     DATE,
    train_start  DATE,
    test_day     DATE,
    out_dir      VARCHAR,
    created_at   TIMESTAMP,
    report       JSON
);

-- The feature spec (README "Data contract"): which side-feature columns of users/items are categorical
-- model inputs. One row per column; the base columns (category_id, brand_id) are implied.
CREATE TABLE IF NOT EXISTS feature_spec (
    table_name   VARCHAR,
    column_name  VARCHAR,
    kind         VARCHAR,
    PRIMARY KEY (table_name, column_name)
);

-- The one definition of the price feature, shared by sample building and catalog encoding:
-- log-spaced buckets (4 per e-fold); negative or missing prices → NULL (the model's OOV).
CREATE MACRO IF NOT EXISTS price_bucket(p) AS
    CASE WHEN p >= 0 THEN CAST(floor(ln(1 + p) * 4) AS BIGINT) END;

-- The warehouse's identity: a uuid made once, with the schema. MLflow runs, registered
-- versions and the registered model are tagged with it (tarq.warehouse), so two warehouses
-- on one tracking store never take each other's results. A copied file keeps the identity.
CREATE TABLE IF NOT EXISTS warehouse_meta (key VARCHAR PRIMARY KEY, value VARCHAR);
INSERT INTO warehouse_meta VALUES ('warehouse_id', uuid()::VARCHAR) ON CONFLICT DO NOTHING;
