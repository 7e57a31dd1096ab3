-- The SQL mirror of the Rust write path, for callers that are not Rust, and the
-- legacy RPC names the Python wrappers call, now working.
--
-- What the legacy functions got wrong, and what these do instead:
-- * no `SET TRANSACTION` inside a function (it fails once the call's query has
--   started): both rows are locked with `SELECT ... FOR UPDATE` before they are
--   checked, which keeps the pair consistent at any isolation level;
-- * no `EXCEPTION WHEN OTHERS`: errors keep their SQLSTATE, so 40001 and 40P01
--   stay retryable, and our own refusals have codes of their own:
--     MS001 illegal transition        MS002 conflict (state or process moved)
--     MS003 machine not found         MS004 the two rows already disagree
--     MS005 invalid input             MS006 operation id reused for another transition
-- * guarded, not blind, writes: the state (and for `processing` the process id)
--   the caller expects is compared before anything is written;
-- * `search_path` pinned on every function (CVE-2018-1058), EXECUTE revoked
--   from PUBLIC: grant it to the roles that run transitions.

-- A legacy database already has functions under the legacy names (broken ones).
-- They are not dropped but moved, as they are, into the schema
-- `machine_state_replaced`, which nobody but its owner may use: ALTER ... SET
-- SCHEMA keeps each function whole (its oid, owner, ACL, comment, SECURITY
-- DEFINER flag and anything that depends on it), so down.sql moves it back and
-- the catalog is exactly what it was. Stored `pg_get_functiondef` text would
-- lose the owner, the grants and the comment, and DROP would fail on any
-- dependent object. While parked, the legacy functions (SECURITY DEFINER
-- without a pinned search_path, as shipped) cannot be called by anyone without
-- USAGE on the schema, which is granted to no one.
CREATE SCHEMA machine_state_replaced;
COMMENT ON SCHEMA machine_state_replaced IS
    'legacy functions replaced by machine-state, kept for its down migration; grant no one USAGE';

DO $$
DECLARE
    legacy regprocedure;
BEGIN
    FOR legacy IN
        SELECT p.oid::regprocedure
        FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace
          AND p.proname IN ('atomic_update_machine_state', 'atomic_complete_machine_state',
                            'atomic_error_machine_state', 'atomic_processing_machine_state')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET SCHEMA machine_state_replaced', legacy);
    END LOOP;
END
$$;

CREATE FUNCTION machine_state_transition(
    p_machine_id uuid,
    p_from text,
    p_to text,
    p_process_id uuid DEFAULT NULL,
    p_description text DEFAULT NULL,
    p_operation_id uuid DEFAULT NULL
) RETURNS machine_state_transitions
LANGUAGE plpgsql
AS $fn$
DECLARE
    -- No transition goes from `processing` to `processing`, so one process id
    -- serves both ends: the run that starts, or the run that is expected to end.
    v_expected_process uuid := CASE WHEN p_from = 'processing' THEN p_process_id END;
    v_new_process uuid := CASE WHEN p_to = 'processing' THEN p_process_id END;
    v_operation_id uuid := coalesce(p_operation_id, gen_random_uuid());
    v_machine machines%ROWTYPE;
    v_state machine_state%ROWTYPE;
    v_entry machine_state_transitions%ROWTYPE;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM (VALUES
            ('offline', 'idle'), ('offline', 'processing'),
            ('idle', 'offline'), ('idle', 'processing'),
            ('processing', 'idle'), ('processing', 'error'),
            ('error', 'offline'), ('error', 'idle')
        ) AS legal (from_state, to_state)
        WHERE from_state = p_from AND to_state = p_to
    ) THEN
        RAISE EXCEPTION USING ERRCODE = 'MS001',
            MESSAGE = format('illegal transition from `%s` to `%s`', p_from, p_to);
    END IF;
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

    -- An operation that already committed is reported, never applied twice.
    SELECT * INTO v_entry FROM machine_state_transitions WHERE operation_id = v_operation_id;
    IF FOUND THEN
        IF v_entry.machine_id = p_machine_id AND v_entry.from_state = p_from
           AND v_entry.to_state = p_to THEN
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
         transitioned_at, isolation_level)
    VALUES
        (p_machine_id, p_from, p_to, coalesce(v_new_process, v_expected_process), p_description,
         v_operation_id, 'transition', now(), current_setting('transaction_isolation'))
    RETURNING * INTO v_entry;
    RETURN v_entry;
END
$fn$;

-- The JSON result the legacy Python wrappers read.
CREATE FUNCTION machine_state_transition_result(p_entry machine_state_transitions) RETURNS json
LANGUAGE sql IMMUTABLE
AS $fn$
    SELECT json_build_object(
        'success', true,
        'machine_id', p_entry.machine_id,
        'previous_state', p_entry.from_state,
        'new_state', p_entry.to_state,
        'process_id', p_entry.process_id,
        'operation_id', p_entry.operation_id,
        'transitioned_at', p_entry.transitioned_at,
        'isolation_level', p_entry.isolation_level
    )
$fn$;

-- Legacy core: move a machine to `p_status` from whatever state it is in now.
-- `p_process_id` is the new run when entering `processing`; when leaving it, the
-- run expected to end (defaults to the current one, as legacy callers did not fence).
CREATE FUNCTION atomic_update_machine_state(
    p_machine_id uuid,
    p_status text,
    p_process_id uuid DEFAULT NULL,
    p_is_failure_mode boolean DEFAULT NULL,
    p_failure_description text DEFAULT NULL
) RETURNS json
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_status text;
    v_process uuid;
BEGIN
    IF p_is_failure_mode IS NOT NULL AND p_is_failure_mode IS DISTINCT FROM (p_status = 'error') THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = format('`is_failure_mode` %s does not match status `%s`', p_is_failure_mode, p_status);
    END IF;
    SELECT status, current_process_id INTO v_status, v_process FROM machines WHERE id = p_machine_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'MS003',
            MESSAGE = format('machine `%s` not found', p_machine_id);
    END IF;
    RETURN machine_state_transition_result(machine_state_transition(
        p_machine_id, v_status, p_status,
        CASE WHEN v_status = 'processing' THEN coalesce(p_process_id, v_process) ELSE p_process_id END,
        p_failure_description));
END
$fn$;

-- Legacy executor: the recipe finished, `processing` -> `idle`.
CREATE FUNCTION atomic_complete_machine_state(p_machine_id uuid) RETURNS json
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_process uuid;
BEGIN
    SELECT current_process_id INTO v_process FROM machines WHERE id = p_machine_id;
    RETURN machine_state_transition_result(machine_state_transition(
        p_machine_id, 'processing', 'idle', v_process));
END
$fn$;

-- Legacy executor: the recipe failed, `processing` -> `error`.
CREATE FUNCTION atomic_error_machine_state(p_machine_id uuid, p_error_message text) RETURNS json
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_process uuid;
BEGIN
    SELECT current_process_id INTO v_process FROM machines WHERE id = p_machine_id;
    RETURN machine_state_transition_result(machine_state_transition(
        p_machine_id, 'processing', 'error', v_process, p_error_message));
END
$fn$;

-- Legacy starter: `idle` or `offline` -> `processing` with a new run.
CREATE FUNCTION atomic_processing_machine_state(p_machine_id uuid, p_process_id uuid) RETURNS json
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_status text;
BEGIN
    SELECT status INTO v_status FROM machines WHERE id = p_machine_id;
    RETURN machine_state_transition_result(machine_state_transition(
        p_machine_id,
        CASE WHEN v_status IN ('offline', 'idle') THEN v_status ELSE 'idle' END,
        'processing', p_process_id));
END
$fn$;

-- Pin every function's search_path to pg_catalog, the schema these tables
-- live in, and pg_temp last; revoke EXECUTE from PUBLIC.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'machine_state_transition(uuid, text, text, uuid, text, uuid)',
        'machine_state_transition_result(machine_state_transitions)',
        'atomic_update_machine_state(uuid, text, uuid, boolean, text)',
        'atomic_complete_machine_state(uuid)',
        'atomic_error_machine_state(uuid, text)',
        'atomic_processing_machine_state(uuid, uuid)'
    ]::regprocedure[]
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp',
                       f, current_schema());
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;
