-- The current definition of atomic_stop_machine_state, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.atomic_stop_machine_state(p_machine_id uuid, p_process_id uuid DEFAULT NULL::uuid)
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
        p_machine_id,
        CASE WHEN p_process_id IS NULL THEN coalesce(v_status, 'processing') ELSE 'processing' END,
        'idle', coalesce(p_process_id, v_process), NULL, NULL, 'stop'));
END
$function$;

COMMENT ON FUNCTION public.atomic_stop_machine_state(p_machine_id uuid, p_process_id uuid) IS 'Legacy RPC of the recipe stopper (a user abort): `processing -> idle`, verb `stop`, decided under the row lock, through `machine_state_transition`; with `p_process_id`, only if the machine runs that run. Returns the shipped JSON. SQLSTATEs: MS002 the machine runs another run or none, and those of `machine_state_transition` (MS001, MS003, 55P03, 40001).';
