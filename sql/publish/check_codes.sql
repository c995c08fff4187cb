-- Per code column: non-null count, minimum and maximum (columns named count/min/max(code_j)).
SELECT
    count(COLUMNS('^code_[0-9]+$')),
    min(COLUMNS('^code_[0-9]+$')),
    max(COLUMNS('^code_[0-9]+$'))
FROM {table}
