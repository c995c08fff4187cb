-- Log rows dated after $now and after the last checked day: not yet due. They are in no
-- sample (samples read days before the run date) and do not move `latest`; their day's
-- validation judges them like any other row once it is over.
SELECT
    (SELECT count(*) FROM impressions WHERE ts > $now AND ts::DATE > $last_day) AS impressions,
    (SELECT count(*) FROM behaviors WHERE ts > $now AND ts::DATE > $last_day)   AS behaviors,
    greatest(
        (SELECT max(ts) FROM impressions WHERE ts > $now AND ts::DATE > $last_day),
        (SELECT max(ts) FROM behaviors WHERE ts > $now AND ts::DATE > $last_day)
    ) AS latest_ts;
