-- The current definition of machine_state_relax_invariants, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.machine_state_relax_invariants()
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_lock_timeout interval := coalesce(nullif(current_setting('machine_state.ddl_lock_timeout', true), ''),
                                        '500ms')::interval;
    v_budget interval := coalesce(nullif(current_setting('machine_state.ddl_budget', true), ''),
                                  '60s')::interval;
    v_caller_lock_timeout text := current_setting('lock_timeout');
    v_started timestamptz := clock_timestamp();
    v_attempt integer := 0;
BEGIN
    -- Disabling a trigger locks its table against writes: waited for as in
    -- machine_state_enforce_invariants.
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', greatest(1, ceil(extract(epoch FROM v_lock_timeout) * 1000))::bigint || 'ms', true);
            LOCK TABLE machines, machine_state IN SHARE ROW EXCLUSIVE MODE;
            PERFORM set_config('lock_timeout', v_caller_lock_timeout, true);
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            v_attempt := v_attempt + 1;
            PERFORM machine_state_private.lock_retry(
                v_attempt, v_started, v_budget, v_lock_timeout,
                ARRAY['machines'::regclass, 'machine_state'::regclass], 'relaxing the pair invariants');
        END;
    END LOOP;
    ALTER TABLE machines DISABLE TRIGGER machine_state_pair_invariant;
    ALTER TABLE machine_state DISABLE TRIGGER machine_state_pair_invariant;
END
$function$;

COMMENT ON FUNCTION public.machine_state_relax_invariants() IS 'Turns enforcement off (the triggers disabled); run by the migration owner. Waits for the tables'' locks at most `machine_state.ddl_lock_timeout` (default 500 ms) at a time, retried until `machine_state.ddl_budget` (default 60 s) is spent. SQLSTATEs: 55P03 the budget spent (the sessions holding the tables named; nothing changed); 42501 for other roles.';
