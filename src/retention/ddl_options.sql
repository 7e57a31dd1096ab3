-- How patiently machine_state_prepare_history and machine_state_prune_history
-- (migration 2026-12-05-500000) wait for the history's locks, for this
-- transaction: $1 the longest wait for any one lock, $2 the budget of all
-- attempts (e.g. '500ms', '60000ms').
SELECT set_config('machine_state.ddl_lock_timeout', $1, true),
       set_config('machine_state.ddl_budget', $2, true)
