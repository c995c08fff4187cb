-- First and last day holding a usable impression (NULLs when there is none): not quarantined
-- and not later than $now (UTC). A single impression stamped 2099 (quarantined by validation,
-- or not validated yet) would otherwise make 2099-01-02 the run date of every later `latest`
-- run and stretch the samples' log days. Also all impressions, usable or not, for the message
-- when none is usable.
SELECT
    (min(i.ts) FILTER (WHERE usable))::DATE AS first_day,
    (max(i.ts) FILTER (WHERE usable))::DATE AS last_day,
    count(*)                                AS impressions
FROM (
    SELECT i.ts, i.ts <= $now AND q.row_id IS NULL AS usable
    FROM impressions AS i
    LEFT JOIN (SELECT DISTINCT row_id FROM quarantine_impressions WHERE row_id IS NOT NULL) AS q
        ON q.row_id = i.row_id
) AS i;
