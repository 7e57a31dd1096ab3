-- The current definition of machine_state_private.lock_pair_tables, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION machine_state_private.lock_pair_tables(p_what text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_lock_timeout interval;
    v_budget interval;
    v_setting text;
    v_caller_lock_timeout text := current_setting('lock_timeout');
    v_started timestamptz := clock_timestamp();
    v_attempt integer := 0;
BEGIN
    SELECT * INTO v_lock_timeout, v_budget, v_setting FROM machine_state_private.ddl_patience();
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', v_setting, true);
            LOCK TABLE machines, machine_state IN SHARE ROW EXCLUSIVE MODE;
            PERFORM set_config('lock_timeout', v_caller_lock_timeout, true);
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            v_attempt := v_attempt + 1;
            PERFORM machine_state_private.lock_retry(
                v_attempt, v_started, v_budget, v_lock_timeout,
                ARRAY['machines'::regclass, 'machine_state'::regclass], p_what);
        END;
    END LOOP;
END
$function$;

COMMENT ON FUNCTION machine_state_private.lock_pair_tables(p_what text) IS 'Locks `machines` and `machine_state` in SHARE ROW EXCLUSIVE mode for the caller''s transaction (`machine_state_enforce_invariants`, `machine_state_relax_invariants`), each wait limited and retried as `machine_state_private.ddl_patience` says; `p_what` names the caller in the 55P03 raised when the budget is spent.';
