-- Impressions already in the warehouse: the demo generator refuses to append a second copy.
SELECT count(*) FROM impressions
