-- The current definition of machine_state_transition, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.machine_state_transition(p_machine_id uuid, p_from text, p_to text, p_process_id uuid DEFAULT NULL::uuid, p_description text DEFAULT NULL::text, p_operation_id uuid DEFAULT NULL::uuid, p_verb text DEFAULT NULL::text)
 RETURNS machine_state_transitions
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
 SET lock_timeout TO '5s'
AS $function$
DECLARE
    -- No transition goes from `processing` to `processing`, so one process id
    -- serves both ends: the run that starts, or the run that is expected to end.
    v_expected_process uuid := CASE WHEN p_from = 'processing' THEN p_process_id END;
    v_new_process uuid := CASE WHEN p_to = 'processing' THEN p_process_id END;
    v_operation_id uuid := coalesce(p_operation_id, machine_state_private.uuid_v7());
    v_verb text;
    v_machine machines%ROWTYPE;
    v_state machine_state%ROWTYPE;
    v_entry machine_state_transitions%ROWTYPE;
BEGIN
    -- Input first: what is wrong with the call whatever state the machine is in.
    IF p_machine_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005', MESSAGE = 'a machine id is required';
    END IF;
    -- (Leaving `processing` without naming the run fails the fence below, MS002.)
    IF p_to = 'processing' AND p_process_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = 'starting a recipe needs a process id';
    END IF;
    IF p_description IS NOT NULL AND char_length(p_description) > 4096 THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = format('description is %s characters long, the limit is 4096',
                             char_length(p_description));
    END IF;
    -- Whitespace alone is no description. The class is Unicode's White_Space,
    -- which Rust's `str::trim` strips (the crate and the audit): btrim would
    -- strip only spaces, and let through a pair the audit reports under I4.
    -- (An E'' string: the regex escapes must not depend on
    -- standard_conforming_strings.)
    IF p_to = 'error'
       AND coalesce(p_description, '') !~ E'[^\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]' THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = 'a failure needs a non-empty description';
    END IF;

    -- The transition table (`TRANSITIONS`, src/state.rs). Without a verb, the
    -- one it gives for the two states (`complete` before `stop`).
    SELECT legal.verb INTO v_verb
    FROM (VALUES
        ('offline', 'bring_online', 'idle'), ('offline', 'start', 'processing'),
        ('idle', 'take_offline', 'offline'), ('idle', 'start', 'processing'),
        ('processing', 'complete', 'idle'), ('processing', 'stop', 'idle'),
        ('processing', 'fail', 'error'),
        ('error', 'reset', 'idle'), ('error', 'take_offline', 'offline')
    ) AS legal (from_state, verb, to_state)
    WHERE legal.from_state = p_from AND legal.to_state = p_to
      AND legal.verb = coalesce(p_verb, legal.verb)
    ORDER BY legal.verb = 'stop'
    LIMIT 1;
    IF NOT FOUND THEN
        IF p_verb IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'MS001',
                MESSAGE = format('illegal transition from `%s` to `%s`', p_from, p_to);
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'MS001',
            MESSAGE = format('illegal transition: `%s` from `%s` to `%s`', p_verb, p_from, p_to);
    END IF;

    -- An operation that already committed is reported, never applied twice;
    -- the same states under another verb are another transition. (An entry
    -- written before the history kept verbs matches on the states.)
    SELECT * INTO v_entry FROM machine_state_transitions WHERE operation_id = v_operation_id;
    IF FOUND THEN
        IF v_entry.machine_id = p_machine_id AND v_entry.from_state = p_from
           AND v_entry.to_state = p_to AND coalesce(v_entry.verb, v_verb) = v_verb THEN
            RETURN v_entry;
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'MS006',
            MESSAGE = format('operation `%s` was already used for another transition', v_operation_id);
    END IF;

    SELECT * INTO v_machine FROM machines WHERE id = p_machine_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'MS003',
            MESSAGE = format('machine `%s` not found', p_machine_id);
    END IF;
    SELECT * INTO v_state FROM machine_state WHERE machine_id = p_machine_id FOR UPDATE;
    IF NOT FOUND OR v_state.current_state IS DISTINCT FROM v_machine.status
       OR v_state.process_id IS DISTINCT FROM v_machine.current_process_id THEN
        RAISE EXCEPTION USING ERRCODE = 'MS004',
            MESSAGE = format('machine `%s` is inconsistent: `machines` says %s (process %s), `machine_state` says %s (process %s)',
                             p_machine_id, v_machine.status, coalesce(v_machine.current_process_id::text, 'none'),
                             coalesce(v_state.current_state, 'nothing'), coalesce(v_state.process_id::text, 'none'));
    END IF;
    IF v_machine.status IS DISTINCT FROM p_from
       OR v_machine.current_process_id IS DISTINCT FROM v_expected_process THEN
        RAISE EXCEPTION USING ERRCODE = 'MS002',
            MESSAGE = format('machine `%s` changed: expected %s (process %s), found %s (process %s)',
                             p_machine_id, p_from, coalesce(v_expected_process::text, 'none'),
                             v_machine.status, coalesce(v_machine.current_process_id::text, 'none'));
    END IF;

    UPDATE machines
    SET status = p_to, current_process_id = v_new_process, updated_at = now()
    WHERE id = p_machine_id;
    UPDATE machine_state
    SET current_state = p_to,
        process_id = v_new_process,
        state_since = now(),
        updated_at = now(),
        is_failure_mode = (p_to = 'error'),
        failure_component = NULL,
        failure_description = CASE WHEN p_to = 'error' THEN p_description END
    WHERE machine_id = p_machine_id;
    INSERT INTO machine_state_transitions
        (machine_id, from_state, to_state, process_id, description, operation_id, kind,
         transitioned_at, isolation_level, verb)
    VALUES
        (p_machine_id, p_from, p_to, coalesce(v_new_process, v_expected_process), p_description,
         v_operation_id, 'transition', now(), current_setting('transaction_isolation'), v_verb)
    RETURNING * INTO v_entry;
    RETURN v_entry;
END
$function$;

COMMENT ON FUNCTION public.machine_state_transition(p_machine_id uuid, p_from text, p_to text, p_process_id uuid, p_description text, p_operation_id uuid, p_verb text) IS 'Moves machine `p_machine_id` from `p_from` to `p_to` (verb `p_verb`, by default the one the transition table gives), writing both rows and appending the history entry in one statement: the SQL twin of the crate''s write path. Compare-and-set on `p_from` and, leaving `processing`, on the run `p_process_id`; `p_operation_id` (default: a new UUIDv7) makes a retry apply at most once. Returns the history entry. Called by the crate''s `WritePath::SqlFunction`, by the `atomic_*` functions and by services granted through `machine_state_grant_application`. SQLSTATEs: MS001 illegal transition, MS002 the state or run moved, MS003 no such machine, MS004 the two rows already disagree, MS005 invalid input, MS006 operation id used for another transition, 55P03 lock timeout (5 s), 40001/40P01 passed through for a retry, 42501 not granted.';
