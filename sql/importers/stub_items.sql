-- Catalog stubs: every item this load's impressions show but the catalog lacks gets a row
-- with item_id only (features NULL → OOV for the model), so impressions keep referential
-- integrity. A stub is an ordinary append: a later feature file cannot replace it.
INSERT INTO items (item_id, load_id)
SELECT DISTINCT i.item_id, $load_id
FROM impressions AS i
WHERE i.load_id = $load_id
  AND i.item_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM items AS c WHERE c.item_id = i.item_id);
