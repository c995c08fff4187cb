-- The shuffle of a build in many user buckets: the rows of {table} from $start to $end (a
-- group of days) with their user's hash bucket, as rows.sql computes it, written partitioned by
-- bucket so that each bucket's job reads only its own rows (instead of every row of the window
-- once per bucket); $per_part neighbouring buckets share a partition (1 unless the buckets are
-- very many). Rows are copied as they are; rows.sql filters them as it filters the table.
SELECT t.*, (hash(t.user_id) % $buckets) // $per_part AS part
FROM {table} AS t
WHERE t.ts >= $start AND t.ts < $end AND t.user_id IS NOT NULL
