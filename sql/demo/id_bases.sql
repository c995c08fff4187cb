-- The largest item and user ids present, so demo ids can start after them.
SELECT (SELECT coalesce(max(item_id), 0) FROM items) AS item_base,
       (SELECT coalesce(max(user_id), 0) FROM users) AS user_base
