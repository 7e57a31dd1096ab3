-- The current definition of machine_state_relax_invariants, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.machine_state_relax_invariants()
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
BEGIN
    -- Disabling a trigger locks its table against writes: waited for as in
    -- machine_state_enforce_invariants.
    PERFORM machine_state_private.lock_pair_tables('relaxing the pair invariants');
    ALTER TABLE machines DISABLE TRIGGER machine_state_pair_invariant;
    ALTER TABLE machine_state DISABLE TRIGGER machine_state_pair_invariant;
END
$function$;

COMMENT ON FUNCTION public.machine_state_relax_invariants() IS 'Turns enforcement off (the triggers disabled); run by the migration owner. Waits for the tables'' locks at most `machine_state.ddl_lock_timeout` (default 500 ms) at a time, retried until `machine_state.ddl_budget` (default 60 s) is spent. SQLSTATEs: 55P03 the budget spent (the sessions holding the tables named; nothing changed); 42501 for other roles.';
