INSERT INTO users SELECT range, 'bench' FROM range(1, $n_users + 1)
