-- The session's `lock_timeout` (see runner.rs).
SELECT current_setting('lock_timeout') AS previous
