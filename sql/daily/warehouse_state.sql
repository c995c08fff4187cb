-- A cheap signature of the warehouse's contents: row counts and the highest row ids of the
-- raw tables, and how many rows are quarantined. Raw tables are append-only, so any load or
-- quarantine changes it; the daily flow keys its sample-build cache on it.
SELECT
    (SELECT count(*) FROM items)                          AS items,
    (SELECT count(*) FROM users)                          AS users,
    (SELECT count(*) FROM impressions)                    AS impressions,
    (SELECT coalesce(max(row_id), 0) FROM impressions)    AS impressions_max_row_id,
    (SELECT count(*) FROM behaviors)                      AS behaviors,
    (SELECT coalesce(max(row_id), 0) FROM behaviors)      AS behaviors_max_row_id,
    (SELECT count(*) FROM quarantine_impressions)         AS quarantined_impressions,
    (SELECT count(*) FROM quarantine_behaviors)           AS quarantined_behaviors,
    (SELECT count(*) FROM quarantine_items)               AS quarantined_items,
    (SELECT count(*) FROM quarantine_users)               AS quarantined_users;
