-- Synthetic catalog for the sample-builder benchmark (uniform; throughput only).
INSERT INTO items
SELECT range, range % 500, range % 5000, (range % 997) * 1.0, 'bench' FROM range(1, $n_items + 1)
