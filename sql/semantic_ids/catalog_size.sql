-- Number of catalog items: what coverage of a semantic-ID assignment is measured against.
SELECT count(*) AS n_items FROM items
