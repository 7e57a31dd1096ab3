-- The history's retention ($1: the window in seconds, $2: the batch of the
-- default partition's deletes): machine_state_prune_history (migration
-- 2026-12-05-300000) drops the daily partitions wholly older than the
-- window, keeping each machine's latest entry. Returns the number removed.
SELECT machine_state_prune_history(make_interval(secs => $1), $2::integer) AS deleted
