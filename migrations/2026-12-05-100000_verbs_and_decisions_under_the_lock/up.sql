-- The history records the verb, and the legacy functions decide under the lock.
--
-- 1. `machine_state_transitions.verb`: which transition an entry records
--    (`start`, `complete`, `stop`, `fail`, `reset`, `bring_online`,
--    `take_offline`, and `create` / `repair` for the entries of those kinds).
--    `processing -> idle` is a `complete` or a `stop`: the states alone cannot
--    tell them apart. Nullable: entries written before this migration have no
--    verb (NULL, "not recorded"); adding a nullable column without a default
--    rewrites nothing.
-- 2. `machine_state_transition` takes the verb (`p_verb`, last, defaulting to
--    the verb the transition table gives for the two states; `processing ->
--    idle` then counts as a `complete`: a stop says so). Its table of legal
--    transitions now holds the verbs (`TRANSITIONS` in src/state.rs;
--    tests/integration/parity.rs pins the two). An operation id repeated with
--    another verb is another transition (MS006), not "already applied".
--    A new signature: the function is dropped and created again, with the
--    settings, privileges and recorded grants of the old one.
-- 3. The legacy functions name no source state, so they lock the machine's
--    rows first (`SELECT ... FOR UPDATE`, `machines` then `machine_state`, the
--    order every writer takes) and decide the source from what they found: a
--    change that committed while they waited for the lock is the state they
--    start from, never a conflict (MS002). A transition that is illegal from
--    the state found is MS001. Under READ COMMITTED (PostgREST's default)
--    the locked row is the latest committed one. Under REPEATABLE READ a row
--    changed after the transaction's snapshot cannot be locked: 40001, which
--    the caller retries (the transaction cannot see the row it would decide
--    on). A legacy caller that passes a run (`p_process_id`) claims it: that
--    stays a compare-and-set, MS002 when the machine runs another one.
-- 4. `atomic_stop_machine_state(p_machine_id, p_process_id DEFAULT NULL)`:
--    the legacy stopper's call, `processing -> idle` recorded as a `stop`,
--    fenced on the run when given one; SECURITY DEFINER, `search_path`
--    pinned, `lock_timeout = 5s`, and granted like the other legacy
--    functions (`machine_state_grant_application` now grants it; roles it
--    granted before get it here).

ALTER TABLE machine_state_transitions ADD COLUMN verb text;
COMMENT ON COLUMN machine_state_transitions.verb IS
    'the transition recorded: start, complete, stop, fail, reset, bring_online, take_offline, create or repair; NULL on entries written before migration 2026-12-05-100000';

-- A legacy database's own `atomic_stop_machine_state`, if any, is parked
-- whole, as migration 000003 parks the other legacy functions.
DO $$
DECLARE
    legacy regprocedure;
BEGIN
    FOR legacy IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace
          AND p.proname = 'atomic_stop_machine_state'
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET SCHEMA machine_state_replaced', legacy);
    END LOOP;
END
$$;

DROP FUNCTION machine_state_transition(uuid, text, text, uuid, text, uuid);

CREATE FUNCTION machine_state_transition(
    p_machine_id uuid,
    p_from text,
    p_to text,
    p_process_id uuid DEFAULT NULL,
    p_description text DEFAULT NULL,
    p_operation_id uuid DEFAULT NULL,
    p_verb text DEFAULT NULL
) RETURNS machine_state_transitions
LANGUAGE plpgsql
AS $fn$
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
$fn$;

-- The JSON result the legacy Python wrappers read, now with the verb.
CREATE OR REPLACE FUNCTION machine_state_transition_result(p_entry machine_state_transitions)
RETURNS json
LANGUAGE sql VOLATILE
AS $fn$
    SELECT json_build_object(
        'success', true,
        'machine', (SELECT row_to_json(m) FROM machines m WHERE m.id = p_entry.machine_id),
        'machine_state', (SELECT row_to_json(s) FROM machine_state s
                          WHERE s.machine_id = p_entry.machine_id),
        'updated_at', p_entry.transitioned_at,
        'machine_id', p_entry.machine_id,
        'previous_state', p_entry.from_state,
        'new_state', p_entry.to_state,
        'verb', p_entry.verb,
        'process_id', p_entry.process_id,
        'operation_id', p_entry.operation_id,
        'transitioned_at', p_entry.transitioned_at,
        'isolation_level', p_entry.isolation_level
    )
$fn$;

-- Legacy core (the custom wrapper), with the shipped parameters: move a
-- machine to the state both halves name, from the state it is in once its
-- rows are locked. Otherwise as migration 2026-12-01-000001 made it. The verb
-- is the one the transition table gives (`processing -> idle`: `complete`;
-- a stop calls `atomic_stop_machine_state`).
CREATE OR REPLACE FUNCTION atomic_update_machine_state(
    p_machine_id uuid,
    p_machine_status text,
    p_current_process_id uuid DEFAULT NULL,
    p_machine_state_current_state text DEFAULT NULL,
    p_machine_state_process_id uuid DEFAULT NULL,
    p_is_failure_mode boolean DEFAULT false,
    p_failure_description text DEFAULT NULL
) RETURNS json
LANGUAGE plpgsql
AS $fn$
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
$fn$;

-- Legacy executor: the recipe finished, `processing` -> `idle`, recorded as a
-- `complete`; the run is the one found under the lock.
CREATE OR REPLACE FUNCTION atomic_complete_machine_state(p_machine_id uuid) RETURNS json
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_status text;
    v_process uuid;
BEGIN
    SELECT status, current_process_id INTO v_status, v_process
    FROM machines WHERE id = p_machine_id FOR UPDATE;
    RETURN machine_state_transition_result(machine_state_transition(
        p_machine_id, coalesce(v_status, 'processing'), 'idle', v_process, NULL, NULL, 'complete'));
END
$fn$;

-- Legacy executor: the recipe failed, `processing` -> `error`, with the
-- description the shipped function meant to store, recorded as a `fail`.
CREATE OR REPLACE FUNCTION atomic_error_machine_state(p_machine_id uuid, p_error_message text)
RETURNS json
LANGUAGE plpgsql
AS $fn$
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
$fn$;

-- Legacy starter: `idle` or `offline` -> `processing` with a new run,
-- recorded as a `start`, from the state found under the lock.
CREATE OR REPLACE FUNCTION atomic_processing_machine_state(p_machine_id uuid, p_process_id uuid)
RETURNS json
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_status text;
BEGIN
    SELECT status INTO v_status FROM machines WHERE id = p_machine_id FOR UPDATE;
    RETURN machine_state_transition_result(machine_state_transition(
        p_machine_id, coalesce(v_status, 'idle'), 'processing', p_process_id, NULL, NULL, 'start'));
END
$fn$;

-- Legacy stopper: a user aborted the run, `processing` -> `idle`, recorded as
-- a `stop`. Given the run (`p_process_id`), only that run is stopped (MS002
-- when the machine runs another one, or none); without it, the run found
-- under the lock.
CREATE FUNCTION atomic_stop_machine_state(p_machine_id uuid, p_process_id uuid DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
AS $fn$
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
$fn$;

-- Grants to application roles: the stopper's function too.
CREATE OR REPLACE FUNCTION machine_state_grant_application(p_role regrole) RETURNS SETOF text
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_schema oid := (SELECT relnamespace FROM pg_class WHERE oid = 'machines'::regclass);
    wanted record;
    statement text;
BEGIN
    IF p_role IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005', MESSAGE = 'a role is required';
    END IF;
    FOR wanted IN
        -- `acl`: the object's ACL as it stands (NULL means the built-in default).
        SELECT 'USAGE' AS privilege, 'SCHEMA' AS object_type,
               quote_ident(n.nspname) AS object,
               coalesce(n.nspacl, acldefault('n', n.nspowner)) AS acl
        FROM pg_namespace n
        WHERE n.oid = v_schema
        UNION ALL
        SELECT 'SELECT', 'TABLE', quote_ident(c.relname),
               coalesce(c.relacl, acldefault('r', c.relowner))
        FROM pg_class c
        WHERE c.relnamespace = v_schema AND c.relkind = 'r'
          AND c.relname IN ('machines', 'machine_state', 'machine_state_transitions',
                            '__diesel_schema_migrations')
        UNION ALL
        SELECT 'EXECUTE', 'FUNCTION', p.oid::regprocedure::text,
               coalesce(p.proacl, acldefault('f', p.proowner))
        FROM pg_proc p
        WHERE p.pronamespace = v_schema
          AND p.proname IN ('machine_state_transition', 'atomic_update_machine_state',
                            'atomic_complete_machine_state', 'atomic_error_machine_state',
                            'atomic_processing_machine_state', 'atomic_stop_machine_state')
        ORDER BY 2, 3
    LOOP
        -- Granted to the role itself already (by the legacy system, say):
        -- nothing to do, and nothing to take back later.
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM aclexplode(wanted.acl) a
            WHERE a.grantee = p_role AND a.privilege_type = wanted.privilege);
        statement := format('GRANT %s ON %s %s TO %s',
                            wanted.privilege, wanted.object_type, wanted.object, p_role);
        EXECUTE statement;
        INSERT INTO machine_state_private.application_grants VALUES
            (p_role, wanted.privilege, wanted.object_type, wanted.object)
        ON CONFLICT DO NOTHING;
        RETURN NEXT statement;
    END LOOP;

    -- Least privilege is about what the role can do, not only what we grant.
    FOR wanted IN
        SELECT t AS object FROM unnest(ARRAY['machines', 'machine_state',
                                             'machine_state_transitions']) t
        WHERE has_table_privilege(p_role, t, 'INSERT, UPDATE, DELETE, TRUNCATE')
    LOOP
        RAISE WARNING USING
            MESSAGE = format('role %s can still write `%s` directly', p_role, wanted.object),
            HINT = 'those privileges were granted outside machine-state (the legacy grants?); '
                   'revoke them once the legacy writers are retired';
    END LOOP;
END
$fn$;

-- Settings: every function this migration (re)created gets its search_path
-- pinned (CREATE OR REPLACE resets it); those that write run as their owner
-- with the transition functions' lock_timeout.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'machine_state_transition(uuid, text, text, uuid, text, uuid, text)',
        'atomic_update_machine_state(uuid, text, uuid, text, uuid, boolean, text)',
        'atomic_complete_machine_state(uuid)',
        'atomic_error_machine_state(uuid, text)',
        'atomic_processing_machine_state(uuid, uuid)',
        'atomic_stop_machine_state(uuid, uuid)'
    ]::regprocedure[]
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, %I, pg_temp '
                       'SET lock_timeout = %L', f, current_schema(), '5s');
    END LOOP;
    FOREACH f IN ARRAY ARRAY[
        'machine_state_transition_result(machine_state_transitions)',
        'machine_state_grant_application(regrole)'
    ]::regprocedure[]
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp',
                       f, current_schema());
    END LOOP;
END
$$;

-- Privileges of the two new functions: their owner's alone (whatever default
-- privileges granted, Supabase's included), then what
-- `machine_state_grant_application` granted: machine_state_transition's
-- grants move to its new signature, and every role granted a legacy function
-- gets the stopper's.
DO $$
DECLARE
    item record;
BEGIN
    FOR item IN
        SELECT p.oid::regprocedure AS function, a.privilege_type,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
        FROM pg_proc p
        CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
        WHERE p.oid IN ('machine_state_transition(uuid, text, text, uuid, text, uuid, text)'::regprocedure,
                        'atomic_stop_machine_state(uuid, uuid)'::regprocedure)
          AND a.grantee <> p.proowner
    LOOP
        EXECUTE format('REVOKE %s ON FUNCTION %s FROM %s',
                       item.privilege_type, item.function, item.grantee);
    END LOOP;

    FOR item IN
        UPDATE machine_state_private.application_grants
        SET object = 'machine_state_transition(uuid,text,text,uuid,text,uuid,text)'
        WHERE object_type = 'FUNCTION'
          AND object = 'machine_state_transition(uuid,text,text,uuid,text,uuid)'
        RETURNING grantee
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s',
                       'machine_state_transition(uuid,text,text,uuid,text,uuid,text)', item.grantee);
    END LOOP;

    FOR item IN
        SELECT DISTINCT g.grantee FROM machine_state_private.application_grants g
        WHERE g.object_type = 'FUNCTION' AND g.object LIKE 'atomic\_%'
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s',
                       'atomic_stop_machine_state(uuid,uuid)', item.grantee);
        INSERT INTO machine_state_private.application_grants VALUES
            (item.grantee, 'EXECUTE', 'FUNCTION', 'atomic_stop_machine_state(uuid,uuid)');
    END LOOP;
END
$$;
