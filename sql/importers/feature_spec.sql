-- Side-feature columns the warehouse's feature spec declares for one table, with their kind.
SELECT column_name, kind FROM feature_spec WHERE table_name = $table ORDER BY column_name;
