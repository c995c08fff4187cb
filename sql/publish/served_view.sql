-- The switch, part 3: what readers query. Run in the same transaction as set_served.
CREATE OR REPLACE VIEW serving_item_ids AS SELECT * FROM {table}
