-- The switch, part 2: the pointer to the served version (one row).
INSERT OR REPLACE INTO serving_state (id, version, switched_at) VALUES (1, $version, $switched_at)
