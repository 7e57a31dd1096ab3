-- The current definition of atomic_error_machine_state, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.atomic_error_machine_state(p_machine_id uuid, p_error_message text)
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
    -- The message itself must say something (the prefix always does): the
    -- same White_Space class as `machine_state_transition`'s description check.
    IF coalesce(p_error_message, '') !~ E'[^\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]' THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = 'a failure needs a non-empty error message';
    END IF;
    SELECT status, current_process_id INTO v_status, v_process
    FROM machines WHERE id = p_machine_id FOR UPDATE;
    RETURN machine_state_transition_result(machine_state_transition(
        p_machine_id, coalesce(v_status, 'processing'), 'error', v_process,
        'Recipe execution error: ' || p_error_message, NULL, 'fail'));
END
$function$;

COMMENT ON FUNCTION public.atomic_error_machine_state(p_machine_id uuid, p_error_message text) IS 'Legacy RPC of the recipe executor: the running recipe failed (`processing -> error`, verb `fail`), with the description `Recipe execution error: <p_error_message>`, decided under the row lock, through `machine_state_transition`; returns the shipped JSON. SQLSTATEs: MS005 blank or NULL message (or over 4096 characters with the prefix), and those of `machine_state_transition` (MS001, MS003, 55P03, 40001).';
