-- Record the lake's URL: from now on the warehouse is in lake layout.
INSERT INTO warehouse_meta VALUES ('lake', $url)
