-- Set `lock_timeout` (see runner.rs). Binds: 1 the new value, 2 whether
-- only for the transaction.
SELECT set_config('lock_timeout', $1, $2)
