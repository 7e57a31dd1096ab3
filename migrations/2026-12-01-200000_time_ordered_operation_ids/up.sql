-- Operation ids that keep the history's unique index local: a random (v4)
-- id lands on a random page of `machine_state_transitions_operation_id_key`,
-- so once the index outgrows shared_buffers nearly every insert reads a cold
-- page and, after each checkpoint, writes it whole (a full-page image). A
-- UUIDv7 starts with the time in milliseconds: consecutive ids go to the
-- index's rightmost pages. The crate generates v7 ids itself (`Uuid::now_v7`);
-- this gives the SQL function the same default for callers that pass none.
-- Callers' own ids (any version) are still accepted.

-- A version 7 UUID (RFC 9562): 48 bits of Unix time in milliseconds, the
-- version and variant bits, and random bits from gen_random_uuid().
CREATE FUNCTION machine_state_private.uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                                      FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$fn$;
REVOKE ALL ON FUNCTION machine_state_private.uuid_v7() FROM PUBLIC;

-- machine_state_transition as migration 000003 made it, with the v7 default.
-- CREATE OR REPLACE resets what later migrations set on the function
-- (SECURITY DEFINER: 000005; search_path; lock_timeout: 2026-12-01-100000):
-- they are set again below.
CREATE OR REPLACE FUNCTION machine_state_transition(
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
    v_operation_id uuid := coalesce(p_operation_id, machine_state_private.uuid_v7());
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

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION machine_state_transition(uuid, text, text, uuid, text, uuid) '
                   'SECURITY DEFINER SET search_path = pg_catalog, %I, pg_temp SET lock_timeout = %L',
                   current_schema(), '5s');
END
$$;
