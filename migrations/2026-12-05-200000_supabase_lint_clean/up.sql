-- Clean under Supabase's own tools (`supabase db lint` runs plpgsql_check at
-- warning level, with extra, performance and security warnings), and the
-- bookkeeping of `machine-state doctor --fix`.
--
-- 1. `machine_state_check_pair_invariant()`, one trigger function on two
--    tables, read `NEW.id` or `NEW.machine_id` depending on the table: correct
--    at run time, but a field of the other table to a static check (42703). It
--    is split per table: `machine_state_check_machines_pair()` and
--    `machine_state_check_machine_state_pair()`, both calling
--    `machine_state_check_pairs(uuid[], ...)`, the check itself. The triggers
--    keep their name (`machine_state_pair_invariant`) and whether they are
--    enabled (enforcement on or off).
-- 2. `machine_state_grant_application` / `_revoke_application` ran SQL held in
--    a text variable (flagged as injectable): each statement is now built by
--    `format` from a `regrole`, `regclass`, `regnamespace` or `regprocedure`
--    and run at once. What they grant, record and return is unchanged.
-- 3. `machine_state_pair_violations`: its list of findings started from the
--    text `'{}'` (a text-to-array cast) and now from an empty `text[]`.
-- 4. `machine_state_private.doctor_fixes`: every statement `doctor --fix`
--    applied, with the statements that undo it; `doctor --undo-fix` consumes
--    it, and so does this migration's down.sql (fixes undone, newest first,
--    before the table goes).
--
-- CREATE OR REPLACE resets a function's settings: each gets its pinned
-- `search_path` back below. New functions are executable by their owner
-- alone (on Supabase, the default privileges granted them to the API roles
-- by name: taken back).

----------------------------------------------------------------------------
-- 3.
CREATE OR REPLACE FUNCTION machine_state_pair_violations(m machines, s machine_state) RETURNS text[]
LANGUAGE plpgsql STABLE
AS $fn$
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
$fn$;

----------------------------------------------------------------------------
-- 1. The check, for the machines a row event touched, as they are now.
CREATE FUNCTION machine_state_check_pairs(p_touched uuid[], p_operation text, p_table text)
RETURNS void
LANGUAGE plpgsql STABLE
AS $fn$
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
$fn$;

-- The constraint triggers' functions, one per table. SECURITY DEFINER so the
-- check reads both tables whatever the writer may read; they write nothing.
CREATE FUNCTION machine_state_check_machines_pair() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
AS $fn$
BEGIN
    -- INSERT or UPDATE; a deleted machine has no pair
    PERFORM machine_state_check_pairs(ARRAY[NEW.id], TG_OP, TG_TABLE_NAME);
    RETURN NULL;
END
$fn$;

CREATE FUNCTION machine_state_check_machine_state_pair() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
AS $fn$
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
$fn$;

-- The triggers on the new functions, as enabled (or not) as they were.
DO $$
DECLARE
    v_machines_enabled boolean := (SELECT tgenabled <> 'D' FROM pg_trigger
                                   WHERE tgname = 'machine_state_pair_invariant'
                                     AND tgrelid = 'machines'::regclass);
    v_state_enabled boolean := (SELECT tgenabled <> 'D' FROM pg_trigger
                                WHERE tgname = 'machine_state_pair_invariant'
                                  AND tgrelid = 'machine_state'::regclass);
BEGIN
    DROP TRIGGER machine_state_pair_invariant ON machines;
    DROP TRIGGER machine_state_pair_invariant ON machine_state;
    -- UPDATE OF lists only the columns the invariants read, so legacy writes
    -- to other columns (heartbeats, locations) queue no check.
    CREATE CONSTRAINT TRIGGER machine_state_pair_invariant
        AFTER INSERT OR UPDATE OF id, status, current_process_id ON machines
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION machine_state_check_machines_pair();
    CREATE CONSTRAINT TRIGGER machine_state_pair_invariant
        AFTER INSERT OR DELETE
           OR UPDATE OF machine_id, current_state, process_id, is_failure_mode, failure_description
        ON machine_state
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION machine_state_check_machine_state_pair();
    IF NOT v_machines_enabled THEN
        ALTER TABLE machines DISABLE TRIGGER machine_state_pair_invariant;
    END IF;
    IF NOT v_state_enabled THEN
        ALTER TABLE machine_state DISABLE TRIGGER machine_state_pair_invariant;
    END IF;
END
$$;

DROP FUNCTION machine_state_check_pair_invariant();

----------------------------------------------------------------------------
-- 2. Grants built from names the catalog resolved, run at once.
CREATE OR REPLACE FUNCTION machine_state_grant_application(p_role regrole) RETURNS SETOF text
LANGUAGE plpgsql
AS $fn$
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
$fn$;

CREATE OR REPLACE FUNCTION machine_state_revoke_application(p_role regrole) RETURNS SETOF text
LANGUAGE plpgsql
AS $fn$
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
$fn$;

----------------------------------------------------------------------------
-- 4. What `doctor --fix` applied, and how to undo it.
CREATE TABLE machine_state_private.doctor_fixes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now(),
    finding text NOT NULL,        -- what doctor reported
    statement text NOT NULL,      -- what was run
    undo text[] NOT NULL          -- run in order, newest fix first, to undo it
);
REVOKE ALL ON machine_state_private.doctor_fixes FROM PUBLIC;

----------------------------------------------------------------------------
-- Pinned `search_path`, and EXECUTE for the owner alone.
DO $$
DECLARE
    f regprocedure;
    item record;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'machine_state_pair_violations(machines, machine_state)',
        'machine_state_check_pairs(uuid[], text, text)',
        'machine_state_check_machines_pair()',
        'machine_state_check_machine_state_pair()',
        'machine_state_grant_application(regrole)',
        'machine_state_revoke_application(regrole)'
    ]::regprocedure[]
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp',
                       f, current_schema());
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        FOR item IN
            SELECT a.grantee::regrole AS grantee FROM pg_proc p
            CROSS JOIN LATERAL aclexplode(p.proacl) a
            WHERE p.oid = f AND a.grantee <> p.proowner AND a.grantee <> 0
        LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', f, item.grantee);
        END LOOP;
    END LOOP;
END
$$;
