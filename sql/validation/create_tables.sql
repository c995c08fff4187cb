-- What each validation run checked, per raw log table and day: the rows of that day when it
-- was validated (count and an order-free checksum of their row ids) and the verdict. Raw rows
-- are append-only, so a day whose count or checksum differs from its latest record has new
-- rows (a re-delivery, late data) and is validated again; a day whose latest record failed
-- is validated again too, unless an operator accepted it: `tarq validate --accept-day` adds a
-- record of the day's current rows with success = true, accepted_by (who) and reason (why);
-- validated_at is when, run_id the run whose failed verdict was accepted.
CREATE TABLE IF NOT EXISTS validated_days (
    table_name   VARCHAR,
    day          DATE,
    n_rows       BIGINT,
    checksum     UBIGINT,
    run_id       VARCHAR,
    success      BOOLEAN,
    validated_at TIMESTAMP,
    accepted_by  VARCHAR,
    reason       VARCHAR
);
-- Warehouses validated before acceptance existed.
ALTER TABLE validated_days ADD COLUMN IF NOT EXISTS accepted_by VARCHAR;
ALTER TABLE validated_days ADD COLUMN IF NOT EXISTS reason VARCHAR;
