-- Impressions and behaviours of any load logged on one day ($lo <= ts < $hi): a demo day is
-- appended only to a warehouse that holds nothing on it.
SELECT (SELECT count(*) FROM impressions WHERE ts >= $lo AND ts < $hi) AS impressions,
       (SELECT count(*) FROM behaviors WHERE ts >= $lo AND ts < $hi) AS behaviors
