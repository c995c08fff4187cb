-- Each user's last $history_len behaviours of the demo loads $load_ids (those before $before
-- when it is not NULL), grouped by user and oldest first: the history the click model sees
-- when the simulation goes on to the next day (or replays the day that starts at $before). (ts, row_id) is the order the generator logged them in (one thread, in time order).
-- act is the action's index in $actions; ts is in microseconds since the epoch.
SELECT user_id,
       item_id,
       epoch_us(ts) AS ts,
       (list_position($actions, action) - 1)::TINYINT AS act
FROM behaviors
WHERE list_contains($load_ids, load_id)
  AND ($before IS NULL OR ts < $before)
QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, row_id DESC) <= $history_len
ORDER BY user_id, ts, row_id
