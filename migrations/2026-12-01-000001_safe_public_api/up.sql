-- Safe where the schema is a public API (Supabase: PostgREST serves `public`
-- to anyone holding the project's anon key), and the legacy RPCs exactly as the
-- Python wrappers call them.
--
-- 1. The legacy RPC contract. `atomic_update_machine_state` takes the seven
--    parameters of the function as shipped (names, order, defaults: PostgREST
--    finds a function by the names of its JSON keys), the results carry the
--    legacy keys (`success`, `machine`, `machine_state`, `updated_at`), and the
--    error wrapper stores `Recipe execution error: <message>` as shipped.
-- 2. Bookkeeping leaves the exposed schema: `machine_state_adopted_objects` and
--    `machine_state_application_grants` move to `machine_state_private`, a
--    schema only its owner may use.
-- 3. Default privileges taken back. Supabase runs `ALTER DEFAULT PRIVILEGES IN
--    SCHEMA public GRANT ALL ON TABLES, FUNCTIONS, SEQUENCES TO anon,
--    authenticated, service_role`, so everything a migration creates in
--    `public` is granted to those roles *by name*: the `REVOKE ... FROM PUBLIC`
--    of earlier migrations takes nothing away from them. Here every privilege
--    on an object this crate created is revoked from every role but its owner,
--    except what `machine_state_grant_application` granted (recorded). Tables
--    the legacy system owns (adopted, not created) keep their grants:
--    operators retire those, and `machine-state doctor` reports them.
-- 4. Row level security on every table this crate created in the schema
--    (and on diesel's `__diesel_schema_migrations`, which an API role could
--    otherwise empty to make the next `migrate` re-run everything): one
--    SELECT policy each, open to whoever holds SELECT on the table, which is
--    the owner and the roles granted through `machine_state_grant_application`.
--    No policy allows a write: only the owner (and roles that bypass RLS *and*
--    hold a write privilege, which step 3 took away) writes.
-- 5. The parked legacy functions (`machine_state_replaced`, kept for the down
--    migration) stop looking like live SECURITY DEFINER functions with a
--    mutable search_path: they become SECURITY INVOKER with a pinned
--    search_path while parked; `down.sql` puts both back as they were. Their
--    owner, grants and comment are not touched.

----------------------------------------------------------------------------
-- 2. Bookkeeping out of the exposed schema (first: the steps below record
--    into it).
CREATE SCHEMA machine_state_private;
REVOKE ALL ON SCHEMA machine_state_private FROM PUBLIC;
COMMENT ON SCHEMA machine_state_private IS
    'machine-state bookkeeping, used only by its migrations and functions; grant no one USAGE';

ALTER TABLE machine_state_adopted_objects SET SCHEMA machine_state_private;
ALTER TABLE machine_state_private.machine_state_adopted_objects RENAME TO adopted_objects;
ALTER TABLE machine_state_application_grants SET SCHEMA machine_state_private;
ALTER TABLE machine_state_private.machine_state_application_grants RENAME TO application_grants;

-- What this migration changed that its down.sql must put back.
CREATE TABLE machine_state_private.public_api_changes (
    change text NOT NULL,     -- 'rls' or 'parked'
    object text NOT NULL,     -- a table, or a parked function's signature
    -- parked functions: what they were before
    was_security_definer boolean,
    had_search_path boolean,
    PRIMARY KEY (change, object)
);

----------------------------------------------------------------------------
-- 1. The legacy RPC contract.

-- The result every legacy RPC returns: the legacy keys (`success`, both rows
-- as they are after the write, `updated_at`) and ours. VOLATILE, so that it
-- sees the write made by the call its argument comes from.
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
        'process_id', p_entry.process_id,
        'operation_id', p_entry.operation_id,
        'transitioned_at', p_entry.transitioned_at,
        'isolation_level', p_entry.isolation_level
    )
$fn$;

DROP FUNCTION atomic_update_machine_state(uuid, text, uuid, boolean, text);

-- Legacy core, with the shipped parameters: move a machine to the state both
-- halves name, from whatever state it is in now. The shipped function never
-- created (`p_machine_state_current_state` had no default after parameters
-- with defaults); here it defaults to NULL, meaning "the same as
-- `p_machine_status`". Halves that disagree (the two states, or the two
-- process ids, or a failure mode that does not match the state) are refused
-- with MS005 and change nothing. `p_current_process_id` is the new run when
-- entering `processing`; when leaving it, the run expected to end (defaults
-- to the current one: legacy callers did not fence). As shipped, a NULL
-- `p_failure_description` keeps the stored one (an `error` needs one).
CREATE FUNCTION atomic_update_machine_state(
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
    SELECT m.status, m.current_process_id, s.failure_description
    INTO v_status, v_process, v_description
    FROM machines m LEFT JOIN machine_state s ON s.machine_id = m.id
    WHERE m.id = p_machine_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'MS003',
            MESSAGE = format('machine `%s` not found', p_machine_id);
    END IF;
    RETURN machine_state_transition_result(machine_state_transition(
        p_machine_id, v_status, p_machine_status,
        CASE WHEN v_status = 'processing' THEN coalesce(p_current_process_id, v_process)
             ELSE p_current_process_id END,
        CASE WHEN p_machine_status = 'error' THEN coalesce(p_failure_description, v_description)
             ELSE p_failure_description END));
END
$fn$;
ALTER FUNCTION atomic_update_machine_state(uuid, text, uuid, text, uuid, boolean, text)
    SECURITY DEFINER;

-- Legacy executor: the recipe failed, `processing` -> `error`, with the
-- description the shipped function meant to store.
CREATE OR REPLACE FUNCTION atomic_error_machine_state(p_machine_id uuid, p_error_message text)
RETURNS json
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_process uuid;
BEGIN
    -- The message itself must say something (the prefix always does): the
    -- same White_Space class as `machine_state_transition`'s description check.
    IF coalesce(p_error_message, '') !~ E'[^\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]' THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = 'a failure needs a non-empty error message';
    END IF;
    SELECT current_process_id INTO v_process FROM machines WHERE id = p_machine_id;
    RETURN machine_state_transition_result(machine_state_transition(
        p_machine_id, 'processing', 'error', v_process,
        'Recipe execution error: ' || p_error_message));
END
$fn$;
-- (CREATE OR REPLACE resets what the function was made by migration 000005.)
ALTER FUNCTION atomic_error_machine_state(uuid, text) SECURITY DEFINER;

----------------------------------------------------------------------------
-- Grants to application roles, now on the functions by name (whatever their
-- arguments) and on diesel's migration table (read-only: the command line
-- checks it for pending migrations).
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
                            'atomic_processing_machine_state')
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

CREATE OR REPLACE FUNCTION machine_state_revoke_application(p_role regrole) RETURNS SETOF text
LANGUAGE plpgsql
AS $fn$
DECLARE
    granted record;
    statement text;
BEGIN
    FOR granted IN
        DELETE FROM machine_state_private.application_grants WHERE grantee = p_role
        RETURNING *
    LOOP
        statement := format('REVOKE %s ON %s %s FROM %s',
                            granted.privilege, granted.object_type, granted.object, granted.grantee);
        EXECUTE statement;
        RETURN NEXT statement;
    END LOOP;
END
$fn$;

-- Roles granted the old `atomic_update_machine_state` through us get the new one.
DO $$
DECLARE
    granted record;
BEGIN
    FOR granted IN
        DELETE FROM machine_state_private.application_grants
        WHERE object_type = 'FUNCTION'
          AND object = 'atomic_update_machine_state(uuid,text,uuid,boolean,text)'
        RETURNING grantee
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s',
                       'atomic_update_machine_state(uuid,text,uuid,text,uuid,boolean,text)',
                       granted.grantee);
        INSERT INTO machine_state_private.application_grants VALUES
            (granted.grantee, 'EXECUTE', 'FUNCTION',
             'atomic_update_machine_state(uuid,text,uuid,text,uuid,boolean,text)');
    END LOOP;
END
$$;

----------------------------------------------------------------------------
-- 3. Default privileges taken back, on every object this crate created.
DO $$
DECLARE
    v_schema oid := current_schema()::regnamespace;
    item record;
BEGIN
    FOR item IN
        WITH our_tables AS (
            -- the history, and `machines` / `machine_state` where we created them
            SELECT c.oid FROM pg_class c
            WHERE c.relnamespace = v_schema AND c.relkind = 'r'
              AND (c.relname = 'machine_state_transitions'
                   OR c.relname IN (SELECT table_name FROM machine_state_private.adopted_objects
                                    WHERE column_name = ''))
            UNION ALL
            SELECT c.oid FROM pg_class c
            WHERE c.relnamespace = 'machine_state_private'::regnamespace AND c.relkind = 'r'
        ),
        ours AS (
            -- those tables and the sequences they own (identity, serial)
            SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS object_type,
                   c.oid::regclass::text AS object, quote_ident(c.relname) AS recorded_as,
                   c.relacl AS acl, c.relowner AS owner
            FROM pg_class c
            WHERE c.oid IN (SELECT oid FROM our_tables)
               OR (c.relkind = 'S' AND c.oid IN (
                       SELECT d.objid FROM pg_depend d
                       WHERE d.classid = 'pg_class'::regclass
                         AND d.refclassid = 'pg_class'::regclass
                         AND d.deptype IN ('a', 'i')
                         AND d.refobjid IN (SELECT oid FROM our_tables)))
            UNION ALL
            SELECT 'FUNCTION', p.oid::regprocedure::text, p.oid::regprocedure::text,
                   p.proacl, p.proowner
            FROM pg_proc p
            WHERE p.pronamespace IN (v_schema, 'machine_state_private'::regnamespace)
              AND (p.proname LIKE 'machine\_state\_%' OR p.proname IN (
                   'atomic_update_machine_state', 'atomic_complete_machine_state',
                   'atomic_error_machine_state', 'atomic_processing_machine_state'))
        )
        SELECT o.object_type, o.object, a.privilege_type,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
        FROM ours o CROSS JOIN LATERAL aclexplode(o.acl) a
        WHERE a.grantee <> o.owner
          AND NOT EXISTS (
              SELECT 1 FROM machine_state_private.application_grants g
              WHERE g.grantee = a.grantee AND g.privilege = a.privilege_type
                AND g.object_type = o.object_type AND g.object = o.recorded_as)
    LOOP
        EXECUTE format('REVOKE %s ON %s %s FROM %s',
                       item.privilege_type, item.object_type, item.object, item.grantee);
    END LOOP;
END
$$;

----------------------------------------------------------------------------
-- 4. Row level security on the tables this crate created, and on diesel's.
DO $$
DECLARE
    v_table regclass;
BEGIN
    FOR v_table IN
        SELECT c.oid::regclass FROM pg_class c
        WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
          AND NOT c.relrowsecurity
          AND pg_has_role(current_user, c.relowner, 'USAGE')
          AND (c.relname IN ('machine_state_transitions', '__diesel_schema_migrations')
               OR c.relname IN (SELECT table_name FROM machine_state_private.adopted_objects
                                WHERE column_name = ''))
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE format('CREATE POLICY machine_state_read ON %s FOR SELECT USING (true)', v_table);
        EXECUTE format($c$COMMENT ON POLICY machine_state_read ON %s IS %L$c$, v_table,
                       'machine-state: whoever holds SELECT on the table reads every row; no policy allows a write');
        INSERT INTO machine_state_private.public_api_changes (change, object)
        VALUES ('rls', v_table::text);
    END LOOP;
END
$$;

-- diesel's own table, created before the first migration with the schema's
-- default privileges: only its owner writes it.
DO $$
DECLARE
    item record;
BEGIN
    FOR item IN
        SELECT a.privilege_type,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
        FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
        WHERE c.oid = to_regclass('__diesel_schema_migrations')
          AND a.grantee <> c.relowner
          AND pg_has_role(current_user, c.relowner, 'USAGE')
          AND NOT EXISTS (
              SELECT 1 FROM machine_state_private.application_grants g
              WHERE g.grantee = a.grantee AND g.privilege = a.privilege_type
                AND g.object = '__diesel_schema_migrations')
    LOOP
        EXECUTE format('REVOKE %s ON TABLE __diesel_schema_migrations FROM %s',
                       item.privilege_type, item.grantee);
    END LOOP;
END
$$;

----------------------------------------------------------------------------
-- 5. Parked legacy functions: not live while parked.
DO $$
DECLARE
    parked record;
BEGIN
    FOR parked IN
        SELECT p.oid::regprocedure AS signature, p.prosecdef,
               EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) c
                       WHERE c LIKE 'search\_path=%') AS pinned
        FROM pg_proc p
        WHERE p.pronamespace = 'machine_state_replaced'::regnamespace
    LOOP
        INSERT INTO machine_state_private.public_api_changes
            (change, object, was_security_definer, had_search_path)
        VALUES ('parked', parked.signature::text, parked.prosecdef, parked.pinned);
        IF NOT parked.pinned THEN
            EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', parked.signature);
        END IF;
        IF parked.prosecdef THEN
            EXECUTE format('ALTER FUNCTION %s SECURITY INVOKER', parked.signature);
        END IF;
    END LOOP;
END
$$;

-- The functions of this migration: the same hardening as every other one.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'machine_state_transition_result(machine_state_transitions)',
        'atomic_update_machine_state(uuid, text, uuid, text, uuid, boolean, text)',
        'atomic_error_machine_state(uuid, text)',
        'machine_state_grant_application(regrole)',
        'machine_state_revoke_application(regrole)'
    ]::regprocedure[]
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp',
                       f, current_schema());
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;
