-- First and last day holding impressions (NULLs when the table is empty).
SELECT min(ts)::DATE AS first_day, max(ts)::DATE AS last_day FROM impressions
