-- Landing rows of one log table waiting to be flushed.
SELECT count(*) FROM {landing}
