-- The flagged rows of every chunk of a table ({source}: the chunks' flagged_rows.sql results,
-- registered by the caller), as the temp table the quarantine is filled from.
CREATE OR REPLACE TEMP TABLE {flagged} AS
SELECT * FROM {source};
