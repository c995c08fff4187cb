-- The landing rows are in the lake's files now (same transaction): empty the landing table.
DELETE FROM {landing}
