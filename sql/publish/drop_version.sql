-- Drop a version's table (rejected, abandoned or pruned; never the served one).
DROP TABLE IF EXISTS {table}
