-- The served semantic IDs (item_id, code_0 … code_{m-1}) and the version serving them; no
-- vectors, so comparing a catalog of millions stays light.
SELECT COLUMNS('^(item_id|version|code_[0-9]+)$')
FROM serving_item_ids
ORDER BY item_id
