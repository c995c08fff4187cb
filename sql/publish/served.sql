-- The served version, if any.
SELECT version FROM serving_state WHERE id = 1
