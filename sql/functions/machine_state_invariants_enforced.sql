-- The current definition of machine_state_invariants_enforced, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.machine_state_invariants_enforced()
 RETURNS boolean
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
    SELECT bool_and(tgenabled <> 'D') FROM pg_trigger
    WHERE tgname = 'machine_state_pair_invariant'
      AND tgrelid IN ('machines'::regclass, 'machine_state'::regclass)
$function$;

COMMENT ON FUNCTION public.machine_state_invariants_enforced() IS 'Whether enforcement is on (both triggers enabled). Read by `machine-state doctor` and `watch` (the gauge `machine_state_invariants_enforced`).';
