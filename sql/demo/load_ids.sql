-- The id bases of a demo window (its ids are base + 1 .. base + n) and how many items and
-- users it wrote, to rebuild its world with the same public ids.
SELECT (SELECT coalesce(min(item_id), 1) - 1 FROM items WHERE load_id = $load_id) AS item_base,
       (SELECT count(*) FROM items WHERE load_id = $load_id) AS n_items,
       (SELECT coalesce(min(user_id), 1) - 1 FROM users WHERE load_id = $load_id) AS user_base,
       (SELECT count(*) FROM users WHERE load_id = $load_id) AS n_users
