-- The current definition of atomic_processing_machine_state, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.atomic_processing_machine_state(p_machine_id uuid, p_process_id uuid)
 RETURNS json
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
 SET lock_timeout TO '5s'
AS $function$
DECLARE
    v_status text;
BEGIN
    SELECT status INTO v_status FROM machines WHERE id = p_machine_id FOR UPDATE;
    RETURN machine_state_transition_result(machine_state_transition(
        p_machine_id, coalesce(v_status, 'idle'), 'processing', p_process_id, NULL, NULL, 'start'));
END
$function$;

COMMENT ON FUNCTION public.atomic_processing_machine_state(p_machine_id uuid, p_process_id uuid) IS 'Legacy RPC of the recipe starter: starts run `p_process_id` on the machine from the state found under the row lock (`offline` or `idle`), through `machine_state_transition` (verb `start`); returns the shipped JSON. SQLSTATEs: those of `machine_state_transition` (MS001 not startable, MS003, MS005, 55P03, 40001).';
