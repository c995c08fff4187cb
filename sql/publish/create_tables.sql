-- Publication bookkeeping for the ready-to-serve semantic-ID table (idempotent).
-- Every publication gets a version and its own table semantic_ids_v<N>; the registry records
-- what it holds and its status: staged (written, not switched), published (its table exists
-- and may be served), rejected (failed a check, table dropped), abandoned (a crashed attempt
-- cleaned up by a rerun), pruned (older than the kept versions, table dropped).
-- serving_state holds the single served version; the view serving_item_ids points at its
-- table. Both change together in one transaction.
CREATE TABLE IF NOT EXISTS semantic_id_versions (
    version        INTEGER PRIMARY KEY,
    table_name     VARCHAR NOT NULL,
    model_name     VARCHAR NOT NULL,
    model_version  VARCHAR NOT NULL,
    run_date       DATE NOT NULL,
    model_uri      VARCHAR,
    model_sha256   VARCHAR,
    ids_sha256     VARCHAR NOT NULL,
    n_items        BIGINT,
    m              INTEGER,
    k              INTEGER,
    dim            INTEGER,
    status         VARCHAR NOT NULL,
    note           VARCHAR,
    created_at     TIMESTAMP NOT NULL,
    published_at   TIMESTAMP,
    export_path    VARCHAR,
    manifest       JSON
);

CREATE TABLE IF NOT EXISTS serving_state (
    id           INTEGER PRIMARY KEY,
    version      INTEGER NOT NULL,
    switched_at  TIMESTAMP NOT NULL
);
