-- The history's daily partitions from today (UTC) to $1 days ahead, those
-- missing (machine_state_prepare_history, migration 2026-12-05-300000).
-- Returns the names of the partitions created.
SELECT partition FROM machine_state_prepare_history($1::integer) AS partition
