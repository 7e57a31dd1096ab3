-- The current definition of machine_state_private.ddl_patience, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION machine_state_private.ddl_patience(OUT lock_timeout interval, OUT budget interval, OUT setting text)
 RETURNS record
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    lock_timeout := coalesce(nullif(current_setting('machine_state.ddl_lock_timeout', true), ''),
                             '500ms')::interval;
    budget := coalesce(nullif(current_setting('machine_state.ddl_budget', true), ''), '60s')::interval;
    IF lock_timeout <= interval '0' OR budget < interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = format('machine_state.ddl_lock_timeout must be positive and machine_state.ddl_budget not negative, got %s and %s',
                             lock_timeout, budget);
    END IF;
    setting := greatest(1, ceil(extract(epoch FROM lock_timeout) * 1000))::bigint || 'ms';
END
$function$;

COMMENT ON FUNCTION machine_state_private.ddl_patience(OUT lock_timeout interval, OUT budget interval, OUT setting text) IS 'The lock timeout and budget of the DDL that runs while the machines do (prepare, prune, enforce, relax): `machine_state.ddl_lock_timeout` (default 500 ms) and `machine_state.ddl_budget` (default 60 s), and the lock timeout as a `lock_timeout` setting. SQLSTATE MS005 for a lock timeout not positive or a negative budget.';
