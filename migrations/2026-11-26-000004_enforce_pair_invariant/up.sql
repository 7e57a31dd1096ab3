-- The pair invariants I1–I4, enforced by the database itself at COMMIT, for
-- every writer: this crate, the SQL functions, and the legacy services that
-- still write the two tables directly.
--
-- A deferred constraint trigger on each table checks, when the transaction
-- commits, every machine whose rows it touched. A transaction that leaves a
-- pair violating I1–I4 (or holding a state string this crate does not know, or
-- a `machines` row without its `machine_state` row) fails with
--     MS007  machine `<id>` would be left inconsistent: <what is broken>
-- and is rolled back whole. The legacy two-write pattern in autocommit is thus
-- refused at its first write: nothing is half-applied. Writing both rows in one
-- transaction (as this crate and `machine_state_transition` do) passes.
-- I5 (timestamps) stays an audit finding: it says nothing about the state.
--
-- The triggers are installed DISABLED: on a database that still holds diverged
-- pairs every write to those machines would fail, and freshly migrated
-- databases in tests and demos deliberately run the legacy pattern. Operators
-- turn enforcement on once the audit shows 0%:
--     SELECT machine_state_enforce_invariants();   -- MS008 while any pair is diverged
--     SELECT machine_state_relax_invariants();     -- the reverse
--     SELECT machine_state_invariants_enforced();  -- where things stand
-- Enabling and disabling triggers needs ownership of the two tables: these are
-- run by the migration owner, and EXECUTE is granted to no one else.

-- What is wrong with one pair (I1–I4), in words; empty when nothing is. `s` is
-- NULL when the `machine_state` row is missing. Mirrors `Pair::violations` in
-- src/pair.rs, without I5.
CREATE FUNCTION machine_state_pair_violations(m machines, s machine_state) RETURNS text[]
LANGUAGE plpgsql STABLE
AS $fn$
DECLARE
    found text[] := '{}';
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
$fn$;

-- The constraint trigger: at COMMIT (it is deferred), check the machines this
-- row event touched, as they are now, not as the event saw them.
CREATE FUNCTION machine_state_check_pair_invariant() RETURNS trigger
LANGUAGE plpgsql
-- SECURITY DEFINER so the check reads both tables whatever the writer may
-- read; it writes nothing. search_path pinned below, as for every function.
SECURITY DEFINER
AS $fn$
DECLARE
    touched uuid[];
    v_id uuid;
    m machines;
    s machine_state;
    broken text[];
BEGIN
    IF TG_TABLE_NAME = 'machines' THEN
        touched := ARRAY[NEW.id];  -- INSERT or UPDATE; a deleted machine has no pair
    ELSIF TG_OP = 'INSERT' THEN
        touched := ARRAY[NEW.machine_id];
    ELSIF TG_OP = 'DELETE' THEN
        touched := ARRAY[OLD.machine_id];
    ELSE
        touched := ARRAY[NEW.machine_id, OLD.machine_id];
    END IF;
    FOREACH v_id IN ARRAY touched LOOP
        SELECT * INTO m FROM machines WHERE id = v_id;
        CONTINUE WHEN NOT FOUND;  -- deleted in this transaction: nothing left to disagree
        SELECT * INTO s FROM machine_state WHERE machine_state.machine_id = v_id;
        broken := machine_state_pair_violations(m, s);
        IF cardinality(broken) > 0 THEN
            RAISE EXCEPTION USING ERRCODE = 'MS007',
                MESSAGE = format('machine `%s` would be left inconsistent: %s',
                                 m.id, array_to_string(broken, '; ')),
                DETAIL = format('checked at commit, after %s on `%s`', TG_OP, TG_TABLE_NAME),
                HINT = 'write `machines` and `machine_state` in one transaction (or call '
                       '`machine_state_transition`); the two rows must agree when it commits';
        END IF;
    END LOOP;
    RETURN NULL;
END
$fn$;

-- UPDATE OF lists only the columns the invariants read, so legacy writes to
-- other columns (heartbeats, locations) queue no check.
CREATE CONSTRAINT TRIGGER machine_state_pair_invariant
    AFTER INSERT OR UPDATE OF id, status, current_process_id ON machines
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION machine_state_check_pair_invariant();
CREATE CONSTRAINT TRIGGER machine_state_pair_invariant
    AFTER INSERT OR DELETE
       OR UPDATE OF machine_id, current_state, process_id, is_failure_mode, failure_description
    ON machine_state
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION machine_state_check_pair_invariant();
ALTER TABLE machines DISABLE TRIGGER machine_state_pair_invariant;
ALTER TABLE machine_state DISABLE TRIGGER machine_state_pair_invariant;

CREATE FUNCTION machine_state_invariants_enforced() RETURNS boolean
LANGUAGE sql STABLE
AS $fn$
    SELECT bool_and(tgenabled <> 'D') FROM pg_trigger
    WHERE tgname = 'machine_state_pair_invariant'
      AND tgrelid IN ('machines'::regclass, 'machine_state'::regclass)
$fn$;

-- Turn enforcement on, unless a pair is diverged now (MS008: repair first).
CREATE FUNCTION machine_state_enforce_invariants() RETURNS void
LANGUAGE plpgsql
AS $fn$
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
$fn$;

-- Turn enforcement off (e.g. to let the legacy writers run while a rollback
-- is prepared). Nothing is checked.
CREATE FUNCTION machine_state_relax_invariants() RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    ALTER TABLE machines DISABLE TRIGGER machine_state_pair_invariant;
    ALTER TABLE machine_state DISABLE TRIGGER machine_state_pair_invariant;
END
$fn$;

DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'machine_state_pair_violations(machines, machine_state)',
        'machine_state_check_pair_invariant()',
        'machine_state_invariants_enforced()',
        'machine_state_enforce_invariants()',
        'machine_state_relax_invariants()'
    ]::regprocedure[]
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp',
                       f, current_schema());
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;
