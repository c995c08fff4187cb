-- First and last timestamp of the checked day's impressions and behaviours (selected by
-- ts::DATE = $day) and their counts: both must lie inside [day start, next day start).
SELECT
    (SELECT min(ts) FROM impressions WHERE ts::DATE = $day) AS impressions_min_ts,
    (SELECT max(ts) FROM impressions WHERE ts::DATE = $day) AS impressions_max_ts,
    (SELECT min(ts) FROM behaviors WHERE ts::DATE = $day)   AS behaviors_min_ts,
    (SELECT max(ts) FROM behaviors WHERE ts::DATE = $day)   AS behaviors_max_ts,
    (SELECT count(*) FROM behaviors WHERE ts::DATE = $day)  AS behaviors;
