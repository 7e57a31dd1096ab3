-- The schema the migrations create, as `pg_dump --schema-only` prints it
-- (PostgreSQL 15) for a freshly migrated database. Generated: do not edit;
-- change the schema with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::
-- Each function's definition is also in sql/functions/<name>.sql.

--
-- PostgreSQL database dump
--

--
-- Name: machine_state_private; Type: SCHEMA; Schema: -; Owner: postgres
--

CREATE SCHEMA machine_state_private;

ALTER SCHEMA machine_state_private OWNER TO postgres;

--
-- Name: SCHEMA machine_state_private; Type: COMMENT; Schema: -; Owner: postgres
--

COMMENT ON SCHEMA machine_state_private IS 'machine-state bookkeeping, used only by its migrations and functions; grant no one USAGE';

--
-- Name: machine_state_replaced; Type: SCHEMA; Schema: -; Owner: postgres
--

CREATE SCHEMA machine_state_replaced;

ALTER SCHEMA machine_state_replaced OWNER TO postgres;

--
-- Name: SCHEMA machine_state_replaced; Type: COMMENT; Schema: -; Owner: postgres
--

COMMENT ON SCHEMA machine_state_replaced IS 'legacy functions replaced by machine-state, kept for its down migration; grant no one USAGE';

--
-- Name: uuid_v7(); Type: FUNCTION; Schema: machine_state_private; Owner: postgres
--

CREATE FUNCTION machine_state_private.uuid_v7() RETURNS uuid
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    RETURN encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                                      FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid;
END
$$;

ALTER FUNCTION machine_state_private.uuid_v7() OWNER TO postgres;

--
-- Name: atomic_complete_machine_state(uuid); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.atomic_complete_machine_state(p_machine_id uuid) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '5s'
    AS $$
DECLARE
    v_status text;
    v_process uuid;
BEGIN
    SELECT status, current_process_id INTO v_status, v_process
    FROM machines WHERE id = p_machine_id FOR UPDATE;
    RETURN machine_state_transition_result(machine_state_transition(
        p_machine_id, coalesce(v_status, 'processing'), 'idle', v_process, NULL, NULL, 'complete'));
END
$$;

ALTER FUNCTION public.atomic_complete_machine_state(p_machine_id uuid) OWNER TO postgres;

--
-- Name: atomic_error_machine_state(uuid, text); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.atomic_error_machine_state(p_machine_id uuid, p_error_message text) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '5s'
    AS $$
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
$$;

ALTER FUNCTION public.atomic_error_machine_state(p_machine_id uuid, p_error_message text) OWNER TO postgres;

--
-- Name: atomic_processing_machine_state(uuid, uuid); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.atomic_processing_machine_state(p_machine_id uuid, p_process_id uuid) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '5s'
    AS $$
DECLARE
    v_status text;
BEGIN
    SELECT status INTO v_status FROM machines WHERE id = p_machine_id FOR UPDATE;
    RETURN machine_state_transition_result(machine_state_transition(
        p_machine_id, coalesce(v_status, 'idle'), 'processing', p_process_id, NULL, NULL, 'start'));
END
$$;

ALTER FUNCTION public.atomic_processing_machine_state(p_machine_id uuid, p_process_id uuid) OWNER TO postgres;

--
-- Name: atomic_stop_machine_state(uuid, uuid); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.atomic_stop_machine_state(p_machine_id uuid, p_process_id uuid DEFAULT NULL::uuid) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '5s'
    AS $$
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
$$;

ALTER FUNCTION public.atomic_stop_machine_state(p_machine_id uuid, p_process_id uuid) OWNER TO postgres;

--
-- Name: atomic_update_machine_state(uuid, text, uuid, text, uuid, boolean, text); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.atomic_update_machine_state(p_machine_id uuid, p_machine_status text, p_current_process_id uuid DEFAULT NULL::uuid, p_machine_state_current_state text DEFAULT NULL::text, p_machine_state_process_id uuid DEFAULT NULL::uuid, p_is_failure_mode boolean DEFAULT false, p_failure_description text DEFAULT NULL::text) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '5s'
    AS $$
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
$$;

ALTER FUNCTION public.atomic_update_machine_state(p_machine_id uuid, p_machine_status text, p_current_process_id uuid, p_machine_state_current_state text, p_machine_state_process_id uuid, p_is_failure_mode boolean, p_failure_description text) OWNER TO postgres;

--
-- Name: machine_state_check_machine_state_pair(); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.machine_state_check_machine_state_pair() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM machine_state_check_pairs(ARRAY[NEW.machine_id], TG_OP, TG_TABLE_NAME);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM machine_state_check_pairs(ARRAY[OLD.machine_id], TG_OP, TG_TABLE_NAME);
    ELSE
        PERFORM machine_state_check_pairs(ARRAY[NEW.machine_id, OLD.machine_id], TG_OP,
                                          TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END
$$;

ALTER FUNCTION public.machine_state_check_machine_state_pair() OWNER TO postgres;

--
-- Name: machine_state_check_machines_pair(); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.machine_state_check_machines_pair() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
BEGIN
    -- INSERT or UPDATE; a deleted machine has no pair
    PERFORM machine_state_check_pairs(ARRAY[NEW.id], TG_OP, TG_TABLE_NAME);
    RETURN NULL;
END
$$;

ALTER FUNCTION public.machine_state_check_machines_pair() OWNER TO postgres;

--
-- Name: machine_state_check_pairs(uuid[], text, text); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.machine_state_check_pairs(p_touched uuid[], p_operation text, p_table text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
    v_id uuid;
    m machines;
    s machine_state;
    broken text[];
BEGIN
    FOREACH v_id IN ARRAY p_touched LOOP
        SELECT * INTO m FROM machines WHERE id = v_id;
        CONTINUE WHEN NOT FOUND;  -- deleted in this transaction: nothing left to disagree
        SELECT * INTO s FROM machine_state WHERE machine_state.machine_id = v_id;
        broken := machine_state_pair_violations(m, s);
        IF cardinality(broken) > 0 THEN
            RAISE EXCEPTION USING ERRCODE = 'MS007',
                MESSAGE = format('machine `%s` would be left inconsistent: %s',
                                 m.id, array_to_string(broken, '; ')),
                DETAIL = format('checked at commit, after %s on `%s`', p_operation, p_table),
                HINT = 'write `machines` and `machine_state` in one transaction (or call '
                       '`machine_state_transition`); the two rows must agree when it commits';
        END IF;
    END LOOP;
END
$$;

ALTER FUNCTION public.machine_state_check_pairs(p_touched uuid[], p_operation text, p_table text) OWNER TO postgres;

--
-- Name: machine_state_enforce_invariants(); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.machine_state_enforce_invariants() RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
    diverged bigint;
    total bigint;
    example text;
BEGIN
    -- The check below must see every committed write, and nothing may diverge
    -- between it and the triggers going on. The lock (which every INSERT,
    -- UPDATE and DELETE conflicts with) waits for writers in flight and holds
    -- new ones off until this transaction ends; in READ COMMITTED, the query
    -- after it takes a fresh snapshot. A REPEATABLE READ snapshot could be
    -- older than the lock, so that is refused.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'MS008',
            MESSAGE = format('cannot enforce the pair invariants in a %s transaction',
                             current_setting('transaction_isolation')),
            HINT = 'call it in autocommit or a READ COMMITTED transaction';
    END IF;
    LOCK TABLE machines, machine_state IN SHARE ROW EXCLUSIVE MODE;
    SELECT count(*) FILTER (WHERE cardinality(v.broken) > 0),
           count(*),
           min(format('machine `%s`: %s', m.id, array_to_string(v.broken, '; ')))
               FILTER (WHERE cardinality(v.broken) > 0)
    INTO diverged, total, example
    FROM machines m
    LEFT JOIN machine_state s ON s.machine_id = m.id
    CROSS JOIN LATERAL (SELECT machine_state_pair_violations(m, s) AS broken) v;
    IF diverged > 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'MS008',
            MESSAGE = format('cannot enforce the pair invariants: %s of %s machines are diverged',
                             diverged, total),
            DETAIL = format('for example %s', example),
            HINT = 'run `machine-state repair` (or `machine_state::repair`) until the audit shows 0%, then try again';
    END IF;
    ALTER TABLE machines ENABLE TRIGGER machine_state_pair_invariant;
    ALTER TABLE machine_state ENABLE TRIGGER machine_state_pair_invariant;
END
$$;

ALTER FUNCTION public.machine_state_enforce_invariants() OWNER TO postgres;

--
-- Name: machine_state_grant_application(regrole); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.machine_state_grant_application(p_role regrole) RETURNS SETOF text
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
    v_schema oid := (SELECT relnamespace FROM pg_class WHERE oid = 'machines'::regclass);
    wanted record;
BEGIN
    IF p_role IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005', MESSAGE = 'a role is required';
    END IF;
    FOR wanted IN
        -- `acl`: the object's ACL as it stands (NULL means the built-in default);
        -- `object`: as recorded in `application_grants` (and as GRANT takes it).
        SELECT 'USAGE' AS privilege, 'SCHEMA' AS object_type,
               quote_ident(n.nspname) AS object, n.oid AS schema_oid,
               NULL::regclass AS relation, NULL::regprocedure AS function,
               coalesce(n.nspacl, acldefault('n', n.nspowner)) AS acl
        FROM pg_namespace n
        WHERE n.oid = v_schema
        UNION ALL
        SELECT 'SELECT', 'TABLE', quote_ident(c.relname), NULL, c.oid::regclass, NULL,
               coalesce(c.relacl, acldefault('r', c.relowner))
        FROM pg_class c
        WHERE c.relnamespace = v_schema AND c.relkind = 'r'
          AND c.relname IN ('machines', 'machine_state', 'machine_state_transitions',
                            '__diesel_schema_migrations')
        UNION ALL
        SELECT 'EXECUTE', 'FUNCTION', p.oid::regprocedure::text, NULL, NULL, p.oid::regprocedure,
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
        IF wanted.object_type = 'SCHEMA' THEN
            EXECUTE format('GRANT USAGE ON SCHEMA %s TO %s',
                           wanted.schema_oid::regnamespace, p_role);
        ELSIF wanted.object_type = 'TABLE' THEN
            EXECUTE format('GRANT SELECT ON TABLE %s TO %s', wanted.relation, p_role);
        ELSE
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', wanted.function, p_role);
        END IF;
        INSERT INTO machine_state_private.application_grants VALUES
            (p_role, wanted.privilege, wanted.object_type, wanted.object)
        ON CONFLICT DO NOTHING;
        RETURN NEXT format('GRANT %s ON %s %s TO %s',
                           wanted.privilege, wanted.object_type, wanted.object, p_role);
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
                   'revoke them once the legacy writers are retired (`machine-state doctor --fix`)';
    END LOOP;
END
$$;

ALTER FUNCTION public.machine_state_grant_application(p_role regrole) OWNER TO postgres;

--
-- Name: machine_state_invariants_enforced(); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.machine_state_invariants_enforced() RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
    SELECT bool_and(tgenabled <> 'D') FROM pg_trigger
    WHERE tgname = 'machine_state_pair_invariant'
      AND tgrelid IN ('machines'::regclass, 'machine_state'::regclass)
$$;

ALTER FUNCTION public.machine_state_invariants_enforced() OWNER TO postgres;

--
-- Name: machine_state; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.machine_state (
    machine_id uuid NOT NULL,
    current_state text NOT NULL,
    state_since timestamp with time zone DEFAULT now() NOT NULL,
    process_id uuid,
    is_failure_mode boolean DEFAULT false NOT NULL,
    failure_component text,
    failure_description text,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

ALTER TABLE public.machine_state OWNER TO postgres;

--
-- Name: machines; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.machines (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    status text DEFAULT 'offline'::text NOT NULL,
    current_process_id uuid,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

ALTER TABLE public.machines OWNER TO postgres;

--
-- Name: machine_state_pair_violations(public.machines, public.machine_state); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.machine_state_pair_violations(m public.machines, s public.machine_state) RETURNS text[]
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
    found text[] := ARRAY[]::text[];
    known text[] := ARRAY['offline', 'idle', 'processing', 'error'];
BEGIN
    IF s.machine_id IS NULL THEN
        RETURN ARRAY['no `machine_state` row'];
    END IF;
    IF m.status <> ALL (known) OR s.current_state <> ALL (known) THEN
        found := found || format('unknown state (`machines` says `%s`, `machine_state` says `%s`)',
                                 m.status, s.current_state);
    END IF;
    IF m.status IS DISTINCT FROM s.current_state THEN
        found := found || format('I1: `machines.status` is `%s`, `machine_state.current_state` is `%s`',
                                 m.status, s.current_state);
    END IF;
    IF m.current_process_id IS DISTINCT FROM s.process_id THEN
        found := found || format('I2: the process ids differ (`machines` %s, `machine_state` %s)',
                                 coalesce(m.current_process_id::text, 'none'),
                                 coalesce(s.process_id::text, 'none'));
    END IF;
    IF m.status = ANY (known) THEN
        IF (m.current_process_id IS NOT NULL) <> (m.status = 'processing')
           OR (s.process_id IS NOT NULL) <> (m.status = 'processing') THEN
            found := found || 'I3: a process id must be set exactly in `processing`'::text;
        END IF;
        -- A description must hold something other than whitespace (Unicode's
        -- White_Space, which Rust's `str::trim` strips: as the audit sees it).
        IF s.is_failure_mode <> (m.status = 'error')
           OR (m.status = 'error' AND coalesce(s.failure_description, '')
                                      !~ E'[^\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]') THEN
            found := found
                || 'I4: failure mode (with a description) must be set exactly in `error`'::text;
        END IF;
    END IF;
    RETURN found;
END
$$;

ALTER FUNCTION public.machine_state_pair_violations(m public.machines, s public.machine_state) OWNER TO postgres;

--
-- Name: machine_state_relax_invariants(); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.machine_state_relax_invariants() RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
BEGIN
    ALTER TABLE machines DISABLE TRIGGER machine_state_pair_invariant;
    ALTER TABLE machine_state DISABLE TRIGGER machine_state_pair_invariant;
END
$$;

ALTER FUNCTION public.machine_state_relax_invariants() OWNER TO postgres;

--
-- Name: machine_state_revoke_application(regrole); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.machine_state_revoke_application(p_role regrole) RETURNS SETOF text
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
    granted record;
BEGIN
    FOR granted IN
        DELETE FROM machine_state_private.application_grants WHERE grantee = p_role
        RETURNING *
    LOOP
        IF granted.object_type = 'SCHEMA' THEN
            EXECUTE format('REVOKE USAGE ON SCHEMA %s FROM %s',
                           granted.object::regnamespace, granted.grantee);
        ELSIF granted.object_type = 'TABLE' THEN
            EXECUTE format('REVOKE SELECT ON TABLE %s FROM %s',
                           granted.object::regclass, granted.grantee);
        ELSE
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %s',
                           granted.object::regprocedure, granted.grantee);
        END IF;
        RETURN NEXT format('REVOKE %s ON %s %s FROM %s',
                           granted.privilege, granted.object_type, granted.object, granted.grantee);
    END LOOP;
END
$$;

ALTER FUNCTION public.machine_state_revoke_application(p_role regrole) OWNER TO postgres;

--
-- Name: machine_state_transitions; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.machine_state_transitions (
    id bigint NOT NULL,
    machine_id uuid NOT NULL,
    from_state text,
    to_state text NOT NULL,
    process_id uuid,
    description text,
    operation_id uuid NOT NULL,
    kind text DEFAULT 'transition'::text NOT NULL,
    transitioned_at timestamp with time zone DEFAULT now() NOT NULL,
    isolation_level text DEFAULT current_setting('transaction_isolation'::text) NOT NULL,
    verb text
);

ALTER TABLE public.machine_state_transitions OWNER TO postgres;

--
-- Name: COLUMN machine_state_transitions.verb; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state_transitions.verb IS 'the transition recorded: start, complete, stop, fail, reset, bring_online, take_offline, create or repair; NULL on entries written before migration 2026-12-05-100000';

--
-- Name: machine_state_transition(uuid, text, text, uuid, text, uuid, text); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.machine_state_transition(p_machine_id uuid, p_from text, p_to text, p_process_id uuid DEFAULT NULL::uuid, p_description text DEFAULT NULL::text, p_operation_id uuid DEFAULT NULL::uuid, p_verb text DEFAULT NULL::text) RETURNS public.machine_state_transitions
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET lock_timeout TO '5s'
    AS $$
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
$$;

ALTER FUNCTION public.machine_state_transition(p_machine_id uuid, p_from text, p_to text, p_process_id uuid, p_description text, p_operation_id uuid, p_verb text) OWNER TO postgres;

--
-- Name: machine_state_transition_result(public.machine_state_transitions); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.machine_state_transition_result(p_entry public.machine_state_transitions) RETURNS json
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
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
$$;

ALTER FUNCTION public.machine_state_transition_result(p_entry public.machine_state_transitions) OWNER TO postgres;

--
-- Name: adopted_objects; Type: TABLE; Schema: machine_state_private; Owner: postgres
--

CREATE TABLE machine_state_private.adopted_objects (
    table_name text NOT NULL,
    column_name text DEFAULT ''::text NOT NULL
);

ALTER TABLE machine_state_private.adopted_objects OWNER TO postgres;

--
-- Name: application_grants; Type: TABLE; Schema: machine_state_private; Owner: postgres
--

CREATE TABLE machine_state_private.application_grants (
    grantee regrole NOT NULL,
    privilege text NOT NULL,
    object_type text NOT NULL,
    object text NOT NULL
);

ALTER TABLE machine_state_private.application_grants OWNER TO postgres;

--
-- Name: doctor_fixes; Type: TABLE; Schema: machine_state_private; Owner: postgres
--

CREATE TABLE machine_state_private.doctor_fixes (
    id bigint NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL,
    finding text NOT NULL,
    statement text NOT NULL,
    undo text[] NOT NULL
);

ALTER TABLE machine_state_private.doctor_fixes OWNER TO postgres;

--
-- Name: doctor_fixes_id_seq; Type: SEQUENCE; Schema: machine_state_private; Owner: postgres
--

ALTER TABLE machine_state_private.doctor_fixes ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME machine_state_private.doctor_fixes_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: public_api_changes; Type: TABLE; Schema: machine_state_private; Owner: postgres
--

CREATE TABLE machine_state_private.public_api_changes (
    change text NOT NULL,
    object text NOT NULL,
    was_security_definer boolean,
    had_search_path boolean
);

ALTER TABLE machine_state_private.public_api_changes OWNER TO postgres;

--
-- Name: machine_state_transitions_id_seq; Type: SEQUENCE; Schema: public; Owner: postgres
--

ALTER TABLE public.machine_state_transitions ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.machine_state_transitions_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: doctor_fixes doctor_fixes_pkey; Type: CONSTRAINT; Schema: machine_state_private; Owner: postgres
--

ALTER TABLE ONLY machine_state_private.doctor_fixes
    ADD CONSTRAINT doctor_fixes_pkey PRIMARY KEY (id);

--
-- Name: adopted_objects machine_state_adopted_objects_pkey; Type: CONSTRAINT; Schema: machine_state_private; Owner: postgres
--

ALTER TABLE ONLY machine_state_private.adopted_objects
    ADD CONSTRAINT machine_state_adopted_objects_pkey PRIMARY KEY (table_name, column_name);

--
-- Name: application_grants machine_state_application_grants_pkey; Type: CONSTRAINT; Schema: machine_state_private; Owner: postgres
--

ALTER TABLE ONLY machine_state_private.application_grants
    ADD CONSTRAINT machine_state_application_grants_pkey PRIMARY KEY (grantee, privilege, object_type, object);

--
-- Name: public_api_changes public_api_changes_pkey; Type: CONSTRAINT; Schema: machine_state_private; Owner: postgres
--

ALTER TABLE ONLY machine_state_private.public_api_changes
    ADD CONSTRAINT public_api_changes_pkey PRIMARY KEY (change, object);

--
-- Name: machine_state machine_state_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.machine_state
    ADD CONSTRAINT machine_state_pkey PRIMARY KEY (machine_id);

--
-- Name: machine_state_transitions machine_state_transitions_operation_id_key; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.machine_state_transitions
    ADD CONSTRAINT machine_state_transitions_operation_id_key UNIQUE (operation_id);

--
-- Name: machine_state_transitions machine_state_transitions_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.machine_state_transitions
    ADD CONSTRAINT machine_state_transitions_pkey PRIMARY KEY (id);

--
-- Name: machines machines_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.machines
    ADD CONSTRAINT machines_pkey PRIMARY KEY (id);

--
-- Name: machine_state_processing_since_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX machine_state_processing_since_idx ON public.machine_state USING btree (state_since) WHERE (current_state = 'processing'::text);

--
-- Name: machine_state_transitions_machine_id_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX machine_state_transitions_machine_id_idx ON public.machine_state_transitions USING btree (machine_id, id);

--
-- Name: machines_current_process_id_key; Type: INDEX; Schema: public; Owner: postgres
--

CREATE UNIQUE INDEX machines_current_process_id_key ON public.machines USING btree (current_process_id) WHERE (current_process_id IS NOT NULL);

--
-- Name: machines_processing_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX machines_processing_idx ON public.machines USING btree (id) WHERE (status = 'processing'::text);

--
-- Name: machine_state machine_state_pair_invariant; Type: TRIGGER; Schema: public; Owner: postgres
--

CREATE CONSTRAINT TRIGGER machine_state_pair_invariant AFTER INSERT OR DELETE OR UPDATE OF machine_id, current_state, process_id, is_failure_mode, failure_description ON public.machine_state DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.machine_state_check_machine_state_pair();

ALTER TABLE public.machine_state DISABLE TRIGGER machine_state_pair_invariant;

--
-- Name: machines machine_state_pair_invariant; Type: TRIGGER; Schema: public; Owner: postgres
--

CREATE CONSTRAINT TRIGGER machine_state_pair_invariant AFTER INSERT OR UPDATE OF id, status, current_process_id ON public.machines DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.machine_state_check_machines_pair();

ALTER TABLE public.machines DISABLE TRIGGER machine_state_pair_invariant;

--
-- Name: machine_state machine_state_machine_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.machine_state
    ADD CONSTRAINT machine_state_machine_id_fkey FOREIGN KEY (machine_id) REFERENCES public.machines(id) ON DELETE CASCADE;

--
-- Name: machine_state_transitions machine_state_transitions_machine_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.machine_state_transitions
    ADD CONSTRAINT machine_state_transitions_machine_id_fkey FOREIGN KEY (machine_id) REFERENCES public.machines(id) ON DELETE CASCADE;

--
-- Name: machine_state; Type: ROW SECURITY; Schema: public; Owner: postgres
--

ALTER TABLE public.machine_state ENABLE ROW LEVEL SECURITY;

--
-- Name: machine_state machine_state_read; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY machine_state_read ON public.machine_state FOR SELECT USING (true);

--
-- Name: POLICY machine_state_read ON machine_state; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON POLICY machine_state_read ON public.machine_state IS 'machine-state: whoever holds SELECT on the table reads every row; no policy allows a write';

--
-- Name: machine_state_transitions machine_state_read; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY machine_state_read ON public.machine_state_transitions FOR SELECT USING (true);

--
-- Name: POLICY machine_state_read ON machine_state_transitions; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON POLICY machine_state_read ON public.machine_state_transitions IS 'machine-state: whoever holds SELECT on the table reads every row; no policy allows a write';

--
-- Name: machines machine_state_read; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY machine_state_read ON public.machines FOR SELECT USING (true);

--
-- Name: POLICY machine_state_read ON machines; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON POLICY machine_state_read ON public.machines IS 'machine-state: whoever holds SELECT on the table reads every row; no policy allows a write';

--
-- Name: machine_state_transitions; Type: ROW SECURITY; Schema: public; Owner: postgres
--

ALTER TABLE public.machine_state_transitions ENABLE ROW LEVEL SECURITY;

--
-- Name: machines; Type: ROW SECURITY; Schema: public; Owner: postgres
--

ALTER TABLE public.machines ENABLE ROW LEVEL SECURITY;

--
-- Name: FUNCTION uuid_v7(); Type: ACL; Schema: machine_state_private; Owner: postgres
--

REVOKE ALL ON FUNCTION machine_state_private.uuid_v7() FROM PUBLIC;

--
-- Name: FUNCTION atomic_complete_machine_state(p_machine_id uuid); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.atomic_complete_machine_state(p_machine_id uuid) FROM PUBLIC;

--
-- Name: FUNCTION atomic_error_machine_state(p_machine_id uuid, p_error_message text); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.atomic_error_machine_state(p_machine_id uuid, p_error_message text) FROM PUBLIC;

--
-- Name: FUNCTION atomic_processing_machine_state(p_machine_id uuid, p_process_id uuid); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.atomic_processing_machine_state(p_machine_id uuid, p_process_id uuid) FROM PUBLIC;

--
-- Name: FUNCTION atomic_stop_machine_state(p_machine_id uuid, p_process_id uuid); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.atomic_stop_machine_state(p_machine_id uuid, p_process_id uuid) FROM PUBLIC;

--
-- Name: FUNCTION atomic_update_machine_state(p_machine_id uuid, p_machine_status text, p_current_process_id uuid, p_machine_state_current_state text, p_machine_state_process_id uuid, p_is_failure_mode boolean, p_failure_description text); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.atomic_update_machine_state(p_machine_id uuid, p_machine_status text, p_current_process_id uuid, p_machine_state_current_state text, p_machine_state_process_id uuid, p_is_failure_mode boolean, p_failure_description text) FROM PUBLIC;

--
-- Name: FUNCTION machine_state_check_machine_state_pair(); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.machine_state_check_machine_state_pair() FROM PUBLIC;

--
-- Name: FUNCTION machine_state_check_machines_pair(); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.machine_state_check_machines_pair() FROM PUBLIC;

--
-- Name: FUNCTION machine_state_check_pairs(p_touched uuid[], p_operation text, p_table text); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.machine_state_check_pairs(p_touched uuid[], p_operation text, p_table text) FROM PUBLIC;

--
-- Name: FUNCTION machine_state_enforce_invariants(); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.machine_state_enforce_invariants() FROM PUBLIC;

--
-- Name: FUNCTION machine_state_grant_application(p_role regrole); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.machine_state_grant_application(p_role regrole) FROM PUBLIC;

--
-- Name: FUNCTION machine_state_invariants_enforced(); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.machine_state_invariants_enforced() FROM PUBLIC;

--
-- Name: FUNCTION machine_state_pair_violations(m public.machines, s public.machine_state); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.machine_state_pair_violations(m public.machines, s public.machine_state) FROM PUBLIC;

--
-- Name: FUNCTION machine_state_relax_invariants(); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.machine_state_relax_invariants() FROM PUBLIC;

--
-- Name: FUNCTION machine_state_revoke_application(p_role regrole); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.machine_state_revoke_application(p_role regrole) FROM PUBLIC;

--
-- Name: FUNCTION machine_state_transition(p_machine_id uuid, p_from text, p_to text, p_process_id uuid, p_description text, p_operation_id uuid, p_verb text); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.machine_state_transition(p_machine_id uuid, p_from text, p_to text, p_process_id uuid, p_description text, p_operation_id uuid, p_verb text) FROM PUBLIC;

--
-- Name: FUNCTION machine_state_transition_result(p_entry public.machine_state_transitions); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.machine_state_transition_result(p_entry public.machine_state_transitions) FROM PUBLIC;

--
-- PostgreSQL database dump complete
--
