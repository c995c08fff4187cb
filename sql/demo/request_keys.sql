-- The distinct requests (printf('%016x', request_key), as the demo writes them) of the
-- impressions logged in [$lo, $hi).
SELECT DISTINCT request_id FROM impressions WHERE ts >= $lo AND ts < $hi
