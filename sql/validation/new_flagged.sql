-- An empty table shaped like the frame {frame}, to collect the flagged rows of each chunk
-- (keep_flagged.sql); the quarantine is filled from it once every chunk is checked.
CREATE OR REPLACE TEMP TABLE {flagged} AS
SELECT * FROM {frame} WHERE false;
