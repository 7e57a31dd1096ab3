-- The current definition of atomic_update_machine_state, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.atomic_update_machine_state(p_machine_id uuid, p_machine_status text, p_current_process_id uuid DEFAULT NULL::uuid, p_machine_state_current_state text DEFAULT NULL::text, p_machine_state_process_id uuid DEFAULT NULL::uuid, p_is_failure_mode boolean DEFAULT false, p_failure_description text DEFAULT NULL::text)
 RETURNS json
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
 SET lock_timeout TO '5s'
AS $function$
DECLARE
    v_status text;
    v_process uuid;
    v_description text;
BEGIN
    IF p_machine_state_current_state IS DISTINCT FROM p_machine_status
       AND p_machine_state_current_state IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = format('the two halves disagree: `p_machine_status` is `%s`, '
                             '`p_machine_state_current_state` is `%s`',
                             p_machine_status, p_machine_state_current_state);
    END IF;
    IF p_machine_state_process_id IS DISTINCT FROM p_current_process_id THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = format('the two halves disagree: `p_current_process_id` is %s, '
                             '`p_machine_state_process_id` is %s',
                             coalesce(p_current_process_id::text, 'NULL'),
                             coalesce(p_machine_state_process_id::text, 'NULL'));
    END IF;
    IF p_is_failure_mode IS DISTINCT FROM (p_machine_status = 'error') THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = format('`p_is_failure_mode` %s does not match status `%s`',
                             coalesce(p_is_failure_mode::text, 'NULL'), p_machine_status);
    END IF;
    -- Decide under the lock: what the rows hold once this call holds them.
    SELECT m.status, m.current_process_id INTO v_status, v_process
    FROM machines m WHERE m.id = p_machine_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'MS003',
            MESSAGE = format('machine `%s` not found', p_machine_id);
    END IF;
    SELECT s.failure_description INTO v_description
    FROM machine_state s WHERE s.machine_id = p_machine_id FOR UPDATE;
    RETURN machine_state_transition_result(machine_state_transition(
        p_machine_id, v_status, p_machine_status,
        CASE WHEN v_status = 'processing' THEN coalesce(p_current_process_id, v_process)
             ELSE p_current_process_id END,
        CASE WHEN p_machine_status = 'error' THEN coalesce(p_failure_description, v_description)
             ELSE p_failure_description END));
END
$function$;

COMMENT ON FUNCTION public.atomic_update_machine_state(p_machine_id uuid, p_machine_status text, p_current_process_id uuid, p_machine_state_current_state text, p_machine_state_process_id uuid, p_is_failure_mode boolean, p_failure_description text) IS 'Legacy RPC (the Python wrappers, through Supabase''s PostgREST, with these parameter names): moves the machine to `p_machine_status` from the state it finds under the row lock, through `machine_state_transition`, with the verb the transition table gives; `p_machine_state_current_state` defaults to `p_machine_status`, a NULL `p_failure_description` keeps the stored one. Returns the shipped JSON. SQLSTATEs: MS005 when the halves disagree (states, process ids, failure mode) or the input is invalid, MS003 no such machine, and those of `machine_state_transition` (MS001, MS002, 55P03, 40001).';
