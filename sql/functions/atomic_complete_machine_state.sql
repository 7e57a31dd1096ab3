-- The current definition of atomic_complete_machine_state, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.atomic_complete_machine_state(p_machine_id uuid)
 RETURNS json
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
 SET lock_timeout TO '5s'
AS $function$
DECLARE
    v_status text;
    v_process uuid;
BEGIN
    SELECT status, current_process_id INTO v_status, v_process
    FROM machines WHERE id = p_machine_id FOR UPDATE;
    RETURN machine_state_transition_result(machine_state_transition(
        p_machine_id, coalesce(v_status, 'processing'), 'idle', v_process, NULL, NULL, 'complete'));
END
$function$;

COMMENT ON FUNCTION public.atomic_complete_machine_state(p_machine_id uuid) IS 'Legacy RPC of the recipe executor: the running recipe finished (`processing -> idle`, verb `complete`), decided under the row lock, through `machine_state_transition`; returns the shipped JSON. SQLSTATEs: those of `machine_state_transition` (MS001 not processing, MS003, 55P03, 40001).';
