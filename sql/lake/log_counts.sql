-- Rows of the raw logs (whatever holds them: tables, or the lake's views).
SELECT (SELECT count(*) FROM impressions) AS impressions,
       (SELECT count(*) FROM behaviors) AS behaviors
