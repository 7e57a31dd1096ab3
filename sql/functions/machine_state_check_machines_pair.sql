-- The current definition of machine_state_check_machines_pair, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.machine_state_check_machines_pair()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
BEGIN
    -- INSERT or UPDATE; a deleted machine has no pair
    PERFORM machine_state_check_pairs(ARRAY[NEW.id], TG_OP, TG_TABLE_NAME);
    RETURN NULL;
END
$function$;

COMMENT ON FUNCTION public.machine_state_check_machines_pair() IS 'Trigger function of the deferred constraint trigger `machine_state_pair_invariant` on `machines` (enabled by `machine_state_enforce_invariants`): checks the written machine''s pair through `machine_state_check_pairs` (MS007).';
