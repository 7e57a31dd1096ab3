-- The schema the migrations create, as `pg_dump --schema-only` prints it
-- (PostgreSQL 15) for a freshly migrated database. Generated: do not edit;
-- change the schema with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::
-- Left out: diesel's `__diesel_schema_migrations` and the history's daily
-- partitions (`machine_state_transitions_pYYYYMMDD`, dated by the migration).
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
-- Name: ddl_patience(); Type: FUNCTION; Schema: machine_state_private; Owner: postgres
--

CREATE FUNCTION machine_state_private.ddl_patience(OUT lock_timeout interval, OUT budget interval, OUT setting text) RETURNS record
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    lock_timeout := coalesce(nullif(current_setting('machine_state.ddl_lock_timeout', true), ''),
                             '500ms')::interval;
    budget := coalesce(nullif(current_setting('machine_state.ddl_budget', true), ''), '60s')::interval;
    IF lock_timeout <= interval '0' OR budget < interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = format('machine_state.ddl_lock_timeout must be positive and machine_state.ddl_budget not negative, got %s and %s',
                             lock_timeout, budget);
    END IF;
    setting := greatest(1, ceil(extract(epoch FROM lock_timeout) * 1000))::bigint || 'ms';
END
$$;

ALTER FUNCTION machine_state_private.ddl_patience(OUT lock_timeout interval, OUT budget interval, OUT setting text) OWNER TO postgres;

--
-- Name: FUNCTION ddl_patience(OUT lock_timeout interval, OUT budget interval, OUT setting text); Type: COMMENT; Schema: machine_state_private; Owner: postgres
--

COMMENT ON FUNCTION machine_state_private.ddl_patience(OUT lock_timeout interval, OUT budget interval, OUT setting text) IS 'The lock timeout and budget of the DDL that runs while the machines do (prepare, prune, enforce, relax): `machine_state.ddl_lock_timeout` (default 500 ms) and `machine_state.ddl_budget` (default 60 s), and the lock timeout as a `lock_timeout` setting. SQLSTATE MS005 for a lock timeout not positive or a negative budget.';

--
-- Name: lock_pair_tables(text); Type: FUNCTION; Schema: machine_state_private; Owner: postgres
--

CREATE FUNCTION machine_state_private.lock_pair_tables(p_what text) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
    v_lock_timeout interval;
    v_budget interval;
    v_setting text;
    v_caller_lock_timeout text := current_setting('lock_timeout');
    v_started timestamptz := clock_timestamp();
    v_attempt integer := 0;
BEGIN
    SELECT * INTO v_lock_timeout, v_budget, v_setting FROM machine_state_private.ddl_patience();
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', v_setting, true);
            LOCK TABLE machines, machine_state IN SHARE ROW EXCLUSIVE MODE;
            PERFORM set_config('lock_timeout', v_caller_lock_timeout, true);
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            v_attempt := v_attempt + 1;
            PERFORM machine_state_private.lock_retry(
                v_attempt, v_started, v_budget, v_lock_timeout,
                ARRAY['machines'::regclass, 'machine_state'::regclass], p_what);
        END;
    END LOOP;
END
$$;

ALTER FUNCTION machine_state_private.lock_pair_tables(p_what text) OWNER TO postgres;

--
-- Name: FUNCTION lock_pair_tables(p_what text); Type: COMMENT; Schema: machine_state_private; Owner: postgres
--

COMMENT ON FUNCTION machine_state_private.lock_pair_tables(p_what text) IS 'Locks `machines` and `machine_state` in SHARE ROW EXCLUSIVE mode for the caller''s transaction (`machine_state_enforce_invariants`, `machine_state_relax_invariants`), each wait limited and retried as `machine_state_private.ddl_patience` says; `p_what` names the caller in the 55P03 raised when the budget is spent.';

--
-- Name: lock_retry(integer, timestamp with time zone, interval, interval, regclass[], text); Type: FUNCTION; Schema: machine_state_private; Owner: postgres
--

CREATE FUNCTION machine_state_private.lock_retry(p_attempt integer, p_started timestamp with time zone, p_budget interval, p_lock_timeout interval, p_tables regclass[], p_what text) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v_left interval := p_started + p_budget - clock_timestamp();
    v_pause interval := least(random() * p_lock_timeout * power(2, least(p_attempt, 16) - 1),
                              interval '5 seconds');
    v_holders text;
BEGIN
    IF v_left < p_lock_timeout THEN
        SELECT string_agg(format('backend %s (%s%s)', a.pid,
                                 coalesce(nullif(a.application_name, '') || ', ', ''),
                                 coalesce(a.state, 'unknown')), '; ' ORDER BY a.pid)
        INTO v_holders
        FROM pg_stat_activity a
        WHERE a.pid <> pg_backend_pid()
          AND EXISTS (SELECT FROM pg_locks l
                      WHERE l.pid = a.pid AND l.granted AND l.locktype = 'relation'
                        AND (l.relation = ANY (p_tables)
                             OR l.relation IN (SELECT i.inhrelid FROM pg_inherits i
                                               WHERE i.inhparent = ANY (p_tables))));
        RAISE EXCEPTION USING ERRCODE = '55P03',
            MESSAGE = format('%s gave up after %s attempt(s) in %s: other sessions held the tables'' locks: %s',
                             p_what, p_attempt,
                             date_trunc('milliseconds', clock_timestamp() - p_started),
                             coalesce(v_holders, 'none visible to this role (they may have ended)')),
            HINT = 'End them (SELECT pg_terminate_backend(pid)) or wait for them, and run it again.';
    END IF;
    PERFORM pg_sleep(extract(epoch FROM least(v_pause, v_left - p_lock_timeout)));
END
$$;

ALTER FUNCTION machine_state_private.lock_retry(p_attempt integer, p_started timestamp with time zone, p_budget interval, p_lock_timeout interval, p_tables regclass[], p_what text) OWNER TO postgres;

--
-- Name: FUNCTION lock_retry(p_attempt integer, p_started timestamp with time zone, p_budget interval, p_lock_timeout interval, p_tables regclass[], p_what text); Type: COMMENT; Schema: machine_state_private; Owner: postgres
--

COMMENT ON FUNCTION machine_state_private.lock_retry(p_attempt integer, p_started timestamp with time zone, p_budget interval, p_lock_timeout interval, p_tables regclass[], p_what text) IS 'Between two attempts of a step whose lock wait timed out (`machine_state_prepare_history`, `machine_state_prune_history`, `machine_state_private.lock_pair_tables`): pauses (jittered, growing, at most 5 s), or raises 55P03 naming the sessions holding `p_tables` (or their partitions) once the budget cannot hold another wait.';

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
-- Name: FUNCTION uuid_v7(); Type: COMMENT; Schema: machine_state_private; Owner: postgres
--

COMMENT ON FUNCTION machine_state_private.uuid_v7() IS 'A new time-ordered UUID (version 7), as the crate makes them: the default operation id of `machine_state_transition`, so the history''s unique index is appended to.';

--
-- Name: uuid_v7_bound(timestamp with time zone); Type: FUNCTION; Schema: machine_state_private; Owner: postgres
--

CREATE FUNCTION machine_state_private.uuid_v7_bound(p_at timestamp with time zone) RETURNS uuid
    LANGUAGE sql IMMUTABLE STRICT
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT (lpad(to_hex(floor(extract(epoch FROM p_at) * 1000)::bigint), 12, '0')
            || '00000000000000000000')::uuid
$$;

ALTER FUNCTION machine_state_private.uuid_v7_bound(p_at timestamp with time zone) OWNER TO postgres;

--
-- Name: FUNCTION uuid_v7_bound(p_at timestamp with time zone); Type: COMMENT; Schema: machine_state_private; Owner: postgres
--

COMMENT ON FUNCTION machine_state_private.uuid_v7_bound(p_at timestamp with time zone) IS 'The smallest UUIDv7 of the millisecond `p_at`: the bound of a daily partition of the history (`machine_state_prepare_history`, `machine_state_prune_history`).';

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
-- Name: FUNCTION atomic_complete_machine_state(p_machine_id uuid); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.atomic_complete_machine_state(p_machine_id uuid) IS 'Legacy RPC of the recipe executor: the running recipe finished (`processing -> idle`, verb `complete`), decided under the row lock, through `machine_state_transition`; returns the shipped JSON. SQLSTATEs: those of `machine_state_transition` (MS001 not processing, MS003, 55P03, 40001).';

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
-- Name: FUNCTION atomic_error_machine_state(p_machine_id uuid, p_error_message text); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.atomic_error_machine_state(p_machine_id uuid, p_error_message text) IS 'Legacy RPC of the recipe executor: the running recipe failed (`processing -> error`, verb `fail`), with the description `Recipe execution error: <p_error_message>`, decided under the row lock, through `machine_state_transition`; returns the shipped JSON. SQLSTATEs: MS005 blank or NULL message (or over 4096 characters with the prefix), and those of `machine_state_transition` (MS001, MS003, 55P03, 40001).';

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
-- Name: FUNCTION atomic_processing_machine_state(p_machine_id uuid, p_process_id uuid); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.atomic_processing_machine_state(p_machine_id uuid, p_process_id uuid) IS 'Legacy RPC of the recipe starter: starts run `p_process_id` on the machine from the state found under the row lock (`offline` or `idle`), through `machine_state_transition` (verb `start`); returns the shipped JSON. SQLSTATEs: those of `machine_state_transition` (MS001 not startable, MS003, MS005, 55P03, 40001).';

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
-- Name: FUNCTION atomic_stop_machine_state(p_machine_id uuid, p_process_id uuid); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.atomic_stop_machine_state(p_machine_id uuid, p_process_id uuid) IS 'Legacy RPC of the recipe stopper (a user abort): `processing -> idle`, verb `stop`, decided under the row lock, through `machine_state_transition`; with `p_process_id`, only if the machine runs that run. Returns the shipped JSON. SQLSTATEs: MS002 the machine runs another run or none, and those of `machine_state_transition` (MS001, MS003, 55P03, 40001).';

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
-- Name: FUNCTION atomic_update_machine_state(p_machine_id uuid, p_machine_status text, p_current_process_id uuid, p_machine_state_current_state text, p_machine_state_process_id uuid, p_is_failure_mode boolean, p_failure_description text); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.atomic_update_machine_state(p_machine_id uuid, p_machine_status text, p_current_process_id uuid, p_machine_state_current_state text, p_machine_state_process_id uuid, p_is_failure_mode boolean, p_failure_description text) IS 'Legacy RPC (the Python wrappers, through Supabase''s PostgREST, with these parameter names): moves the machine to `p_machine_status` from the state it finds under the row lock, through `machine_state_transition`, with the verb the transition table gives; `p_machine_state_current_state` defaults to `p_machine_status`, a NULL `p_failure_description` keeps the stored one. Returns the shipped JSON. SQLSTATEs: MS005 when the halves disagree (states, process ids, failure mode) or the input is invalid, MS003 no such machine, and those of `machine_state_transition` (MS001, MS002, 55P03, 40001).';

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
-- Name: FUNCTION machine_state_check_machine_state_pair(); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.machine_state_check_machine_state_pair() IS 'Trigger function of the deferred constraint trigger `machine_state_pair_invariant` on `machine_state` (enabled by `machine_state_enforce_invariants`): checks the written machine''s pair through `machine_state_check_pairs` (MS007).';

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
-- Name: FUNCTION machine_state_check_machines_pair(); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.machine_state_check_machines_pair() IS 'Trigger function of the deferred constraint trigger `machine_state_pair_invariant` on `machines` (enabled by `machine_state_enforce_invariants`): checks the written machine''s pair through `machine_state_check_pairs` (MS007).';

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
-- Name: FUNCTION machine_state_check_pairs(p_touched uuid[], p_operation text, p_table text); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.machine_state_check_pairs(p_touched uuid[], p_operation text, p_table text) IS 'Checks the pairs of the machines `p_touched` that the statement `p_operation` on `p_table` wrote, at COMMIT; raises MS007 naming the machine and what it breaks. Called by the trigger functions `machine_state_check_machines_pair` and `machine_state_check_machine_state_pair`.';

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
    -- Waiting for the lock (behind a legacy writer stalled between its two
    -- writes, say) would queue every writer behind this call: each wait is
    -- limited to machine_state.ddl_lock_timeout (default 500 ms) and tried
    -- again until machine_state.ddl_budget (default 60 s) is spent.
    PERFORM machine_state_private.lock_pair_tables('enforcing the pair invariants');
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
-- Name: FUNCTION machine_state_enforce_invariants(); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.machine_state_enforce_invariants() IS 'Turns enforcement on: from then on PostgreSQL refuses, at COMMIT, any transaction that leaves a machine''s pair inconsistent (MS007). Run once by the migration owner, after the audit shows 0% diverged. Waits for the tables'' locks at most `machine_state.ddl_lock_timeout` (default 500 ms) at a time, retried until `machine_state.ddl_budget` (default 60 s) is spent. SQLSTATEs: MS008 while any pair is diverged (counts them, names one) or inside a REPEATABLE READ transaction; 55P03 the budget spent (the sessions holding the tables named; nothing changed); 42501 for other roles.';

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
        WHERE c.relnamespace = v_schema AND c.relkind IN ('r', 'p')
          AND c.relname IN ('machines', 'machine_state', 'machine_state_transitions', 'machine_state_transitions_default',
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
-- Name: FUNCTION machine_state_grant_application(p_role regrole); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.machine_state_grant_application(p_role regrole) IS 'Grants an application role what it needs and nothing more: USAGE on the schema, SELECT on the three tables, EXECUTE on `machine_state_transition` and the `atomic_*` functions; records it in `machine_state_private.application_grants`, returns each statement, and warns if the role can still write the tables through grants made elsewhere. Run by the migration owner (`machine-state grant`, sql/roles.sql). SQLSTATEs: MS005 no role given; 42501 for other roles.';

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
-- Name: FUNCTION machine_state_invariants_enforced(); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.machine_state_invariants_enforced() IS 'Whether enforcement is on (both triggers enabled). Read by `machine-state doctor` and `watch` (the gauge `machine_state_invariants_enforced`).';

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
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    history_head uuid
);

ALTER TABLE public.machine_state OWNER TO postgres;

--
-- Name: TABLE machine_state; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON TABLE public.machine_state IS 'The other half of a machine''s state, one row per `machines` row: the state with its process id, failure mode and timestamps.

Written only together with its `machines` row, which it must always agree with (I1–I5, see `machines`); `machine_state_pair_violations(machines, machine_state)` says what a pair breaks.';

--
-- Name: COLUMN machine_state.machine_id; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state.machine_id IS 'The machine (`machines.id`): one `machine_state` row per machine.';

--
-- Name: COLUMN machine_state.current_state; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state.current_state IS 'The machine''s state: `offline`, `idle`, `processing` or `error`; always equal to `machines.status` (I1).';

--
-- Name: COLUMN machine_state.state_since; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state.state_since IS 'When the machine entered `current_state`: equal to `machines.updated_at` and to its latest `machine_state_transitions.transitioned_at` (I5).';

--
-- Name: COLUMN machine_state.process_id; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state.process_id IS 'The recipe run the machine is running: set exactly in `processing` (I3), always equal to `machines.current_process_id` (I2).';

--
-- Name: COLUMN machine_state.is_failure_mode; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state.is_failure_mode IS 'True exactly in `error` (I4).';

--
-- Name: COLUMN machine_state.failure_component; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state.failure_component IS 'The failed component, as the legacy executor recorded it; every transition and repair clears it.';

--
-- Name: COLUMN machine_state.failure_description; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state.failure_description IS 'What went wrong: set in `error` (I4: not blank, at most 4096 characters), NULL in every other state.';

--
-- Name: COLUMN machine_state.updated_at; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state.updated_at IS 'When this row was last written (a transition or a repair).';

--
-- Name: COLUMN machine_state.history_head; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state.history_head IS 'The operation id of the machine''s latest `machine_state_transitions` entry, where its chain ends (I6); kept by the trigger `machine_state_transitions_link`, for every writer.';

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
-- Name: TABLE machines; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON TABLE public.machines IS 'One row per machine (deposition tool): its state as the dashboards and the legacy services read it.

Its twin is the machine''s `machine_state` row, and the two never disagree: same state (I1), same process id (I2), the same time of the last transition (I5). Every transition writes both rows in one transaction and appends a `machine_state_transitions` entry (the crate''s write path, or `machine_state_transition()`); once `machine_state_enforce_invariants()` has run, a deferred trigger refuses at COMMIT any transaction that leaves the pair disagreeing (MS007). A legacy table keeps its own further columns. Roles granted through `machine_state_grant_application` read it and change it only through the SQL functions.';

--
-- Name: COLUMN machines.id; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machines.id IS 'The machine''s id; `machine_state.machine_id` and `machine_state_transitions.machine_id` refer to it.';

--
-- Name: COLUMN machines.status; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machines.status IS 'The machine''s state: `offline`, `idle`, `processing` or `error`; always equal to `machine_state.current_state` (I1).';

--
-- Name: COLUMN machines.current_process_id; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machines.current_process_id IS 'The recipe run (`process_executions.id`) the machine is running: set exactly while `status` is `processing` (I3), always equal to `machine_state.process_id` (I2), and on one machine at a time (unique index `machines_current_process_id_key`).';

--
-- Name: COLUMN machines.created_at; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machines.created_at IS 'When the machine was registered.';

--
-- Name: COLUMN machines.updated_at; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machines.updated_at IS 'When the machine last changed state: equal to `machine_state.state_since` and to its latest `machine_state_transitions.transitioned_at` (I5).';

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
-- Name: FUNCTION machine_state_pair_violations(m public.machines, s public.machine_state); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.machine_state_pair_violations(m public.machines, s public.machine_state) IS 'What a machine''s pair of rows breaks (I1–I4, unknown states, a missing `machine_state` row), in words; empty when consistent. The SQL twin of the crate''s `Pair::violations` (a test keeps the two equal). Called by the enforcement trigger and `machine_state_enforce_invariants`; read-only, raises nothing.';

--
-- Name: machine_state_prepare_history(integer, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.machine_state_prepare_history(p_days_ahead integer DEFAULT 7, p_from timestamp with time zone DEFAULT now()) RETURNS SETOF text
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $_$
DECLARE
    -- The history's schema (the pinned search_path starts with pg_catalog).
    v_schema name := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.oid = 'machine_state_transitions'::regclass);
    v_lock_timeout interval;
    v_budget interval;
    v_setting text;
    v_caller_lock_timeout text := current_setting('lock_timeout');
    v_started timestamptz := clock_timestamp();
    v_attempt integer := 0;
    v_created text[];
    v_day date;
    v_low uuid;
    v_high uuid;
    v_name text;
    v_table regclass;
    g record;
BEGIN
    IF p_days_ahead IS NULL OR p_days_ahead < 0 OR p_days_ahead > 366 THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = format('days ahead must be between 0 and 366, got %s', coalesce(p_days_ahead::text, 'NULL'));
    END IF;
    SELECT * INTO v_lock_timeout, v_budget, v_setting FROM machine_state_private.ddl_patience();
    LOOP
        BEGIN
            -- Every lock wait of the attempt limited; the setting, like the
            -- locks, goes with the subtransaction when it fails.
            PERFORM set_config('lock_timeout', v_setting, true);
            v_created := ARRAY[]::text[];
            -- One at a time (a scheduled run and the command, say); neither
            -- reads nor writes of the history wait for it.
            LOCK TABLE ONLY machine_state_transitions IN SHARE UPDATE EXCLUSIVE MODE;
            FOR v_offset IN 0..p_days_ahead LOOP
                v_day := (p_from AT TIME ZONE 'UTC')::date + v_offset;
                v_name := 'machine_state_transitions_p' || to_char(v_day, 'YYYYMMDD');
                CONTINUE WHEN to_regclass(format('%I.%I', v_schema, v_name)) IS NOT NULL;
                v_low := machine_state_private.uuid_v7_bound(v_day::timestamp AT TIME ZONE 'UTC');
                v_high := machine_state_private.uuid_v7_bound((v_day + 1)::timestamp AT TIME ZONE 'UTC');
                EXECUTE format('CREATE TABLE %I.%I (LIKE machine_state_transitions INCLUDING DEFAULTS)',
                               v_schema, v_name);
                v_table := format('%I.%I', v_schema, v_name)::regclass;
                -- Entries of that day already in the default partition (a
                -- random id that happens to fall in it, or today's before
                -- today's partition) move to the new one, linked; the
                -- default partition held from here (the attach below would
                -- hold it anyway), so that no such entry lands in it between
                -- the move and the attach's check.
                LOCK TABLE machine_state_transitions_default IN ACCESS EXCLUSIVE MODE;
                EXECUTE format(
                    'WITH moved AS (DELETE FROM machine_state_transitions_default
                                    WHERE operation_id >= $1 AND operation_id < $2 RETURNING *)
                     INSERT INTO %s SELECT * FROM moved', v_table)
                USING v_low, v_high;
                EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (id)', v_table);
                -- SHARE UPDATE EXCLUSIVE on the history (held), ACCESS
                -- EXCLUSIVE on the default partition while it is checked
                -- for entries of the new range: writes and reads of the
                -- default partition wait for that, nothing else.
                EXECUTE format('ALTER TABLE machine_state_transitions ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                               v_table, v_low, v_high);
                -- Read through the parent only: no privileges of its own
                -- (default privileges, as on Supabase, taken back), row level
                -- security on, with the parent's read policy (whoever could
                -- read it directly reads every row, as of the other tables;
                -- no policy allows a write).
                FOR g IN SELECT DISTINCT a.grantee
                         FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
                         WHERE c.oid = v_table AND a.grantee <> c.relowner LOOP
                    EXECUTE format('REVOKE ALL ON %s FROM %s', v_table,
                                   CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END);
                END LOOP;
                EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', v_table);
                EXECUTE format('CREATE POLICY machine_state_read ON %s FOR SELECT USING (true)', v_table);
                v_created := v_created || v_name;
            END LOOP;
            PERFORM set_config('lock_timeout', v_caller_lock_timeout, true);
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            v_attempt := v_attempt + 1;
            PERFORM machine_state_private.lock_retry(
                v_attempt, v_started, v_budget, v_lock_timeout,
                ARRAY['machine_state_transitions'::regclass], 'preparing the history''s partitions');
        END;
    END LOOP;
    RETURN QUERY SELECT unnest(v_created);
END
$_$;

ALTER FUNCTION public.machine_state_prepare_history(p_days_ahead integer, p_from timestamp with time zone) OWNER TO postgres;

--
-- Name: FUNCTION machine_state_prepare_history(p_days_ahead integer, p_from timestamp with time zone); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.machine_state_prepare_history(p_days_ahead integer, p_from timestamp with time zone) IS 'Creates the history''s missing daily partitions (`machine_state_transitions_pYYYYMMDD`) from `p_from`''s UTC day to `p_days_ahead` days after it, each with no privileges of its own and the read policy; returns their names. Run daily by the migration owner (`machine-state prune-history`, which prepares the coming days; `machine_state::history::prepare_history`). Every lock wait is limited to `machine_state.ddl_lock_timeout` (default 500 ms) and retried until `machine_state.ddl_budget` (default 60 s) is spent. SQLSTATEs: MS005 `p_days_ahead` outside 0–366; 55P03 the budget spent (the sessions holding the history named; nothing created); 42501 for other roles.';

--
-- Name: machine_state_prune_history(interval, integer); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.machine_state_prune_history(p_older_than interval, p_batch integer DEFAULT 10000) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $_$
DECLARE
    v_cutoff timestamptz := now() - p_older_than;
    v_bound uuid := machine_state_private.uuid_v7_bound(now() - p_older_than);
    v_lock_timeout interval;
    v_budget interval;
    v_setting text;
    v_caller_lock_timeout text := current_setting('lock_timeout');
    v_started timestamptz := clock_timestamp();
    v_attempt integer := 0;
    v_parts regclass[];
    v_part regclass;
    v_heads uuid[];
    v_in_parts bigint;
    v_kept bigint;
    v_kept_all bigint;
    v_removed bigint := 0::bigint;
    v_count bigint;
BEGIN
    IF p_older_than IS NULL OR p_older_than < interval '1 day' THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = format('the retention window must be at least 1 day, got %s: a retry inside it must still find its operation id',
                             coalesce(p_older_than::text, 'NULL'));
    END IF;
    IF p_batch IS NULL OR p_batch < 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005', MESSAGE = 'a batch must delete at least one entry';
    END IF;
    SELECT * INTO v_lock_timeout, v_budget, v_setting FROM machine_state_private.ddl_patience();
    -- The locks below are taken from what this transaction sees; a
    -- REPEATABLE READ snapshot could be older than them.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = format('cannot prune the history in a %s transaction', current_setting('transaction_isolation')),
            HINT = 'call it in autocommit or a READ COMMITTED transaction';
    END IF;
    -- Every lock wait of the run limited from here on (the caller's setting
    -- is put back at the end); a wait that times out outside the guarded
    -- steps fails the call (55P03), nothing removed.
    PERFORM set_config('lock_timeout', v_setting, true);
    -- 1. One at a time with prepare: SHARE UPDATE EXCLUSIVE on the history
    -- itself (ONLY: not on its partitions, where autovacuum works), which
    -- neither reads nor writes wait for.
    LOOP
        BEGIN
            LOCK TABLE ONLY machine_state_transitions IN SHARE UPDATE EXCLUSIVE MODE;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            v_attempt := v_attempt + 1;
            PERFORM machine_state_private.lock_retry(
                v_attempt, v_started, v_budget, v_lock_timeout,
                ARRAY['machine_state_transitions'::regclass], 'pruning the history');
        END;
    END LOOP;
    SELECT coalesce(array_agg(part ORDER BY high), ARRAY[]::regclass[]) INTO v_parts
    FROM (SELECT i.inhrelid::regclass AS part,
                 (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::uuid AS high
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'machine_state_transitions'::regclass
            AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT') daily
    WHERE high <= v_bound;
    -- 2. The default partition (entries from before the partitioning, and
    -- ids outside the daily ranges): deleted row by row, in batches, but
    -- never a machine's latest entry.
    LOOP
        DELETE FROM machine_state_transitions_default
        WHERE id IN (SELECT t.id FROM machine_state_transitions_default t
                     WHERE t.transitioned_at < v_cutoff
                       AND NOT EXISTS (SELECT 1 FROM machine_state s
                                       WHERE s.history_head = t.operation_id)
                     ORDER BY t.id LIMIT p_batch);
        GET DIAGNOSTICS v_count = ROW_COUNT;
        v_removed := v_removed + v_count;
        EXIT WHEN v_count < p_batch;
    END LOOP;
    -- 3. The old daily partitions, all in one attempt (a budget of its own:
    -- the deletes above may have taken long), so that a failed attempt
    -- releases every lock it took. Before the history is held exclusively:
    -- the partitions held still (SHARE: no entry lands in them) and counted;
    -- the rows of the machines whose latest entry is in one of them locked
    -- in the order a transition takes them (`machines`, for the foreign key
    -- the entry put back checks, then `machine_state`), and those entries'
    -- ids collected. Then each partition detached (ACCESS EXCLUSIVE on the
    -- history, held to the end: from there on only catalog changes and one
    -- index probe per latest entry), the latest entries put back (into the
    -- default partition, whose range now covers them), the rest dropped
    -- with the partition.
    v_started := clock_timestamp();
    v_attempt := 0;
    LOOP
        BEGIN
            v_in_parts := 0;
            v_kept_all := 0;
            v_heads := ARRAY[]::uuid[];
            FOREACH v_part IN ARRAY v_parts LOOP
                EXECUTE format('LOCK TABLE %s IN SHARE MODE', v_part);
                EXECUTE format('SELECT count(*) FROM %s', v_part) INTO v_count;
                v_in_parts := v_in_parts + v_count;
                EXECUTE format('SELECT count(*) FROM (SELECT FROM machines m JOIN machine_state s ON s.machine_id = m.id
                                JOIN %s d ON d.operation_id = s.history_head FOR KEY SHARE OF m) locked', v_part)
                INTO v_count;
                EXECUTE format('SELECT $1 || coalesce(array_agg(locked.history_head), ARRAY[]::uuid[])
                                FROM (SELECT s.history_head FROM machine_state s JOIN %s d
                                      ON d.operation_id = s.history_head FOR UPDATE OF s) locked', v_part)
                INTO v_heads USING v_heads;
            END LOOP;
            FOREACH v_part IN ARRAY v_parts LOOP
                EXECUTE format('ALTER TABLE machine_state_transitions DETACH PARTITION %s', v_part);
                EXECUTE format('INSERT INTO machine_state_transitions SELECT d.* FROM %s d
                                WHERE d.operation_id = ANY ($1)', v_part)
                USING v_heads;
                GET DIAGNOSTICS v_kept = ROW_COUNT;
                v_kept_all := v_kept_all + v_kept;
                EXECUTE format('DROP TABLE %s', v_part);
            END LOOP;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            v_attempt := v_attempt + 1;
            PERFORM machine_state_private.lock_retry(
                v_attempt, v_started, v_budget, v_lock_timeout,
                ARRAY['machine_state_transitions'::regclass], 'pruning the history');
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', v_caller_lock_timeout, true);
    RETURN v_removed + v_in_parts - v_kept_all;
END
$_$;

ALTER FUNCTION public.machine_state_prune_history(p_older_than interval, p_batch integer) OWNER TO postgres;

--
-- Name: FUNCTION machine_state_prune_history(p_older_than interval, p_batch integer); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.machine_state_prune_history(p_older_than interval, p_batch integer) IS 'Removes the history entries older than `p_older_than` (at least 1 day) but each machine''s latest, so every chain still ends in the current state (I6): whole daily partitions are detached and dropped, the rest deleted in batches of `p_batch`; returns how many entries were removed. Run by the migration owner (`machine-state prune-history`, `machine_state::history::prune_history`). Every lock wait is limited to `machine_state.ddl_lock_timeout` (default 500 ms) and retried until `machine_state.ddl_budget` (default 60 s) is spent; the history is held exclusively only for the detaches. SQLSTATEs: MS005 a window under 1 day, an empty batch, or a bad setting; 55P03 the budget spent (the sessions holding the history named; nothing removed); 42501 for other roles.';

--
-- Name: machine_state_relax_invariants(); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.machine_state_relax_invariants() RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
BEGIN
    -- Disabling a trigger locks its table against writes: waited for as in
    -- machine_state_enforce_invariants.
    PERFORM machine_state_private.lock_pair_tables('relaxing the pair invariants');
    ALTER TABLE machines DISABLE TRIGGER machine_state_pair_invariant;
    ALTER TABLE machine_state DISABLE TRIGGER machine_state_pair_invariant;
END
$$;

ALTER FUNCTION public.machine_state_relax_invariants() OWNER TO postgres;

--
-- Name: FUNCTION machine_state_relax_invariants(); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.machine_state_relax_invariants() IS 'Turns enforcement off (the triggers disabled); run by the migration owner. Waits for the tables'' locks at most `machine_state.ddl_lock_timeout` (default 500 ms) at a time, retried until `machine_state.ddl_budget` (default 60 s) is spent. SQLSTATEs: 55P03 the budget spent (the sessions holding the tables named; nothing changed); 42501 for other roles.';

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
-- Name: FUNCTION machine_state_revoke_application(p_role regrole); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.machine_state_revoke_application(p_role regrole) IS 'Takes back exactly what `machine_state_grant_application` granted the role, and returns each statement. Run by the migration owner (`machine-state revoke`). SQLSTATE 42501 for other roles.';

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
    verb text,
    previous_operation_id uuid
)
PARTITION BY RANGE (operation_id);

ALTER TABLE public.machine_state_transitions OWNER TO postgres;

--
-- Name: TABLE machine_state_transitions; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON TABLE public.machine_state_transitions IS 'The history: one entry per transition, registration and repair, appended in the same transaction as the two rows it describes and never updated.

A machine''s entries form one unbroken chain, each `from_state` the previous `to_state`, and the latest holds its current state (I6). The client''s `operation_id` is unique, so an operation whose COMMIT outcome was lost is resolved by looking it up, and a retry applies at most once. Partitioned by `operation_id`, one partition per UTC day of UUIDv7 ids (`machine_state_transitions_pYYYYMMDD`: `machine_state_prepare_history` creates them ahead, `machine_state_prune_history` drops them behind) and `machine_state_transitions_default` for every other id; pruning keeps each machine''s latest entry. Each entry names the machine''s previous one (`previous_operation_id`), and `machine_state.history_head` its latest.';

--
-- Name: COLUMN machine_state_transitions.id; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state_transitions.id IS 'The order in which the entries were written.';

--
-- Name: COLUMN machine_state_transitions.machine_id; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state_transitions.machine_id IS 'The machine (`machines.id`).';

--
-- Name: COLUMN machine_state_transitions.from_state; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state_transitions.from_state IS 'The state before: the previous entry''s `to_state` (I6); NULL only on the entry that registers the machine (`kind` `create`).';

--
-- Name: COLUMN machine_state_transitions.to_state; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state_transitions.to_state IS 'The state after; the latest entry''s is the machine''s current state (I6).';

--
-- Name: COLUMN machine_state_transitions.process_id; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state_transitions.process_id IS 'The recipe run the transition started (to `processing`) or ended (from `processing`); NULL otherwise.';

--
-- Name: COLUMN machine_state_transitions.description; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state_transitions.description IS 'The failure description of a transition to `error`; a repair''s account of what it changed.';

--
-- Name: COLUMN machine_state_transitions.operation_id; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state_transitions.operation_id IS 'The operation''s id, chosen by the client (UUIDv7 by default), unique: an operation whose outcome was lost is looked up by it, a retry with it applies at most once, and reusing it for another transition is refused (MS006).';

--
-- Name: COLUMN machine_state_transitions.kind; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state_transitions.kind IS '`create` (the machine registered), `transition` or `repair` (the audit''s repair, which brought a diverged pair back).';

--
-- Name: COLUMN machine_state_transitions.transitioned_at; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state_transitions.transitioned_at IS 'The time of the transaction that wrote it: the two rows'' `machines.updated_at` and `machine_state.state_since` (I5).';

--
-- Name: COLUMN machine_state_transitions.isolation_level; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state_transitions.isolation_level IS '`transaction_isolation` when it was written: `repeatable read` for the crate''s write path; the SQL functions, which lock the rows instead, record their caller''s level (`read committed` through PostgREST).';

--
-- Name: COLUMN machine_state_transitions.verb; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state_transitions.verb IS 'The transition recorded: `start`, `complete`, `stop`, `fail`, `reset`, `bring_online`, `take_offline`, `create` or `repair`; NULL on entries written before migration 2026-12-05-100000.';

--
-- Name: COLUMN machine_state_transitions.previous_operation_id; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state_transitions.previous_operation_id IS 'The operation id of the machine''s previous entry, whose `to_state` is this one''s `from_state` (I6); NULL on its first entry and on entries written before migration 2026-12-05-300000. Set by the trigger `machine_state_transitions_link`.';

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
-- Name: FUNCTION machine_state_transition(p_machine_id uuid, p_from text, p_to text, p_process_id uuid, p_description text, p_operation_id uuid, p_verb text); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.machine_state_transition(p_machine_id uuid, p_from text, p_to text, p_process_id uuid, p_description text, p_operation_id uuid, p_verb text) IS 'Moves machine `p_machine_id` from `p_from` to `p_to` (verb `p_verb`, by default the one the transition table gives), writing both rows and appending the history entry in one statement: the SQL twin of the crate''s write path. Compare-and-set on `p_from` and, leaving `processing`, on the run `p_process_id`; `p_operation_id` (default: a new UUIDv7) makes a retry apply at most once. Returns the history entry. Called by the crate''s `WritePath::SqlFunction`, by the `atomic_*` functions and by services granted through `machine_state_grant_application`. SQLSTATEs: MS001 illegal transition, MS002 the state or run moved, MS003 no such machine, MS004 the two rows already disagree, MS005 invalid input, MS006 operation id used for another transition, 55P03 lock timeout (5 s), 40001/40P01 passed through for a retry, 42501 not granted.';

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
-- Name: FUNCTION machine_state_transition_result(p_entry public.machine_state_transitions); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.machine_state_transition_result(p_entry public.machine_state_transitions) IS 'The JSON the legacy RPCs return for a history entry: the shipped keys (`success`, `machine`, `machine_state`, `updated_at`) and the transition''s (`machine_id`, `previous_state`, `new_state`, `verb`, `process_id`, `operation_id`, `transitioned_at`, `isolation_level`). Called by the `atomic_*` functions.';

--
-- Name: machine_state_transitions_link(); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.machine_state_transitions_link() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
    v_head uuid;
BEGIN
    SELECT history_head INTO v_head FROM machine_state
    WHERE machine_id = NEW.machine_id FOR UPDATE;
    -- No state row (a repair writes it first; a legacy writer may not): the
    -- entry starts a chain. An entry that is already the head is one the
    -- retention moves, links and all.
    IF NOT FOUND OR v_head IS NOT DISTINCT FROM NEW.operation_id THEN
        RETURN NEW;
    END IF;
    NEW.previous_operation_id := v_head;
    UPDATE machine_state SET history_head = NEW.operation_id WHERE machine_id = NEW.machine_id;
    RETURN NEW;
END
$$;

ALTER FUNCTION public.machine_state_transitions_link() OWNER TO postgres;

--
-- Name: FUNCTION machine_state_transitions_link(); Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON FUNCTION public.machine_state_transitions_link() IS 'Trigger function of `machine_state_transitions_link` (BEFORE INSERT on `machine_state_transitions`, whoever writes): links the entry to the machine''s previous one (`previous_operation_id`) and makes it `machine_state.history_head`, under the `machine_state` row''s lock. Raises nothing of its own.';

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
-- Name: earlier_comments; Type: TABLE; Schema: machine_state_private; Owner: postgres
--

CREATE TABLE machine_state_private.earlier_comments (
    classoid regclass NOT NULL,
    objoid oid NOT NULL,
    objsubid integer NOT NULL,
    description text NOT NULL
);

ALTER TABLE machine_state_private.earlier_comments OWNER TO postgres;

--
-- Name: TABLE earlier_comments; Type: COMMENT; Schema: machine_state_private; Owner: postgres
--

COMMENT ON TABLE machine_state_private.earlier_comments IS 'The comments that migration 2026-12-05-400000 replaced (a legacy system''s on the tables it owned, and earlier migrations''); its down.sql puts them back.';

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
-- Name: machine_state_transitions_default; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.machine_state_transitions_default (
    id bigint DEFAULT NULL NOT NULL,
    machine_id uuid NOT NULL,
    from_state text,
    to_state text NOT NULL,
    process_id uuid,
    description text,
    operation_id uuid NOT NULL,
    kind text DEFAULT 'transition'::text NOT NULL,
    transitioned_at timestamp with time zone DEFAULT now() NOT NULL,
    isolation_level text DEFAULT current_setting('transaction_isolation'::text) NOT NULL,
    verb text,
    previous_operation_id uuid
);

ALTER TABLE public.machine_state_transitions_default OWNER TO postgres;

--
-- Name: COLUMN machine_state_transitions_default.verb; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state_transitions_default.verb IS 'the transition recorded: start, complete, stop, fail, reset, bring_online, take_offline, create or repair; NULL on entries written before migration 2026-12-05-100000';

--
-- Name: COLUMN machine_state_transitions_default.previous_operation_id; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.machine_state_transitions_default.previous_operation_id IS 'the operation id of the machine''s previous entry (NULL on its first, and on entries written before migration 2026-12-05-300000)';

--
-- Name: machine_state_transitions_id_seq; Type: SEQUENCE; Schema: public; Owner: postgres
--

CREATE SEQUENCE public.machine_state_transitions_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER TABLE public.machine_state_transitions_id_seq OWNER TO postgres;

--
-- Name: machine_state_transitions_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: postgres
--

ALTER SEQUENCE public.machine_state_transitions_id_seq OWNED BY public.machine_state_transitions.id;

--
-- Name: machine_state_transitions_default; Type: TABLE ATTACH; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.machine_state_transitions ATTACH PARTITION public.machine_state_transitions_default DEFAULT;

--
-- Name: machine_state_transitions id; Type: DEFAULT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.machine_state_transitions ALTER COLUMN id SET DEFAULT nextval('public.machine_state_transitions_id_seq'::regclass);

--
-- Name: doctor_fixes doctor_fixes_pkey; Type: CONSTRAINT; Schema: machine_state_private; Owner: postgres
--

ALTER TABLE ONLY machine_state_private.doctor_fixes
    ADD CONSTRAINT doctor_fixes_pkey PRIMARY KEY (id);

--
-- Name: earlier_comments earlier_comments_pkey; Type: CONSTRAINT; Schema: machine_state_private; Owner: postgres
--

ALTER TABLE ONLY machine_state_private.earlier_comments
    ADD CONSTRAINT earlier_comments_pkey PRIMARY KEY (classoid, objoid, objsubid);

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
-- Name: machine_state_transitions_default machine_state_transitions_default_operation_id_key; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.machine_state_transitions_default
    ADD CONSTRAINT machine_state_transitions_default_operation_id_key UNIQUE (operation_id);

--
-- Name: machine_state_transitions_default machine_state_transitions_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.machine_state_transitions_default
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

CREATE INDEX machine_state_transitions_machine_id_idx ON public.machine_state_transitions_default USING btree (machine_id, id);

--
-- Name: machines_current_process_id_key; Type: INDEX; Schema: public; Owner: postgres
--

CREATE UNIQUE INDEX machines_current_process_id_key ON public.machines USING btree (current_process_id) WHERE (current_process_id IS NOT NULL);

--
-- Name: machines_processing_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX machines_processing_idx ON public.machines USING btree (id) WHERE (status = 'processing'::text);

--
-- Name: machine_state_transitions_default_operation_id_key; Type: INDEX ATTACH; Schema: public; Owner: postgres
--

ALTER INDEX public.machine_state_transitions_operation_id_key ATTACH PARTITION public.machine_state_transitions_default_operation_id_key;

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
-- Name: machine_state_transitions machine_state_transitions_link; Type: TRIGGER; Schema: public; Owner: postgres
--

CREATE TRIGGER machine_state_transitions_link BEFORE INSERT ON public.machine_state_transitions FOR EACH ROW EXECUTE FUNCTION public.machine_state_transitions_link();

--
-- Name: machine_state machine_state_machine_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.machine_state
    ADD CONSTRAINT machine_state_machine_id_fkey FOREIGN KEY (machine_id) REFERENCES public.machines(id) ON DELETE CASCADE;

--
-- Name: machine_state_transitions machine_state_transitions_machine_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE public.machine_state_transitions
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
-- Name: machine_state_transitions_default machine_state_read; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY machine_state_read ON public.machine_state_transitions_default FOR SELECT USING (true);

--
-- Name: POLICY machine_state_read ON machine_state_transitions_default; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON POLICY machine_state_read ON public.machine_state_transitions_default IS 'machine-state: whoever holds SELECT on the table reads every row; no policy allows a write';

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
-- Name: machine_state_transitions_default; Type: ROW SECURITY; Schema: public; Owner: postgres
--

ALTER TABLE public.machine_state_transitions_default ENABLE ROW LEVEL SECURITY;

--
-- Name: machines; Type: ROW SECURITY; Schema: public; Owner: postgres
--

ALTER TABLE public.machines ENABLE ROW LEVEL SECURITY;

--
-- Name: FUNCTION ddl_patience(OUT lock_timeout interval, OUT budget interval, OUT setting text); Type: ACL; Schema: machine_state_private; Owner: postgres
--

REVOKE ALL ON FUNCTION machine_state_private.ddl_patience(OUT lock_timeout interval, OUT budget interval, OUT setting text) FROM PUBLIC;

--
-- Name: FUNCTION lock_pair_tables(p_what text); Type: ACL; Schema: machine_state_private; Owner: postgres
--

REVOKE ALL ON FUNCTION machine_state_private.lock_pair_tables(p_what text) FROM PUBLIC;

--
-- Name: FUNCTION lock_retry(p_attempt integer, p_started timestamp with time zone, p_budget interval, p_lock_timeout interval, p_tables regclass[], p_what text); Type: ACL; Schema: machine_state_private; Owner: postgres
--

REVOKE ALL ON FUNCTION machine_state_private.lock_retry(p_attempt integer, p_started timestamp with time zone, p_budget interval, p_lock_timeout interval, p_tables regclass[], p_what text) FROM PUBLIC;

--
-- Name: FUNCTION uuid_v7(); Type: ACL; Schema: machine_state_private; Owner: postgres
--

REVOKE ALL ON FUNCTION machine_state_private.uuid_v7() FROM PUBLIC;

--
-- Name: FUNCTION uuid_v7_bound(p_at timestamp with time zone); Type: ACL; Schema: machine_state_private; Owner: postgres
--

REVOKE ALL ON FUNCTION machine_state_private.uuid_v7_bound(p_at timestamp with time zone) FROM PUBLIC;

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
-- Name: FUNCTION machine_state_prepare_history(p_days_ahead integer, p_from timestamp with time zone); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.machine_state_prepare_history(p_days_ahead integer, p_from timestamp with time zone) FROM PUBLIC;

--
-- Name: FUNCTION machine_state_prune_history(p_older_than interval, p_batch integer); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.machine_state_prune_history(p_older_than interval, p_batch integer) FROM PUBLIC;

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
-- Name: FUNCTION machine_state_transitions_link(); Type: ACL; Schema: public; Owner: postgres
--

REVOKE ALL ON FUNCTION public.machine_state_transitions_link() FROM PUBLIC;

--
-- PostgreSQL database dump complete
--
