-- Least privilege: two roles.
--
-- * The migration owner runs the migrations, owns the tables (or adopted them)
--   and the functions, turns enforcement on and off, and registers machines.
-- * An application role (the services: this crate's users, the legacy Python
--   wrappers) reads the three tables and runs transitions only through the SQL
--   functions. It cannot INSERT, UPDATE or DELETE the tables or the history,
--   so no bug of its own can write a diverged pair or forge history.
--
-- For that, the functions that write become SECURITY DEFINER (they run as
-- their owner, the migration owner). That is safe because each has its
-- search_path pinned (pg_catalog, this schema, pg_temp last: migration 000003),
-- runs no dynamic SQL, and may be executed only by roles it is granted to
-- (EXECUTE was revoked from PUBLIC in 000003).
--
-- Roles are cluster-wide and belong to the operator, so no migration creates
-- one. The operator creates the role, then, as the migration owner:
--     SELECT * FROM machine_state_grant_application('factory_app');
-- which grants exactly: USAGE on this schema, SELECT on `machines`,
-- `machine_state` and `machine_state_transitions`, EXECUTE on
-- `machine_state_transition` and the four legacy `atomic_*` functions, and
-- warns about any write privilege the role holds from elsewhere (e.g. the
-- legacy grants). `machine_state_revoke_application(role)` takes back what it
-- granted. What was granted is written down in
-- `machine_state_application_grants`, so down.sql revokes exactly that and an
-- adopted table's ACL is left as the legacy system had it.

ALTER FUNCTION machine_state_transition(uuid, text, text, uuid, text, uuid) SECURITY DEFINER;
ALTER FUNCTION atomic_update_machine_state(uuid, text, uuid, boolean, text) SECURITY DEFINER;
ALTER FUNCTION atomic_complete_machine_state(uuid) SECURITY DEFINER;
ALTER FUNCTION atomic_error_machine_state(uuid, text) SECURITY DEFINER;
ALTER FUNCTION atomic_processing_machine_state(uuid, uuid) SECURITY DEFINER;

CREATE TABLE machine_state_application_grants (
    grantee regrole NOT NULL,
    privilege text NOT NULL,    -- USAGE, SELECT or EXECUTE
    object_type text NOT NULL,  -- SCHEMA, TABLE or FUNCTION
    object text NOT NULL,       -- as GRANT takes it, relative to this schema
    PRIMARY KEY (grantee, privilege, object_type, object)
);

CREATE FUNCTION machine_state_grant_application(p_role regrole) RETURNS SETOF text
LANGUAGE plpgsql
AS $fn$
DECLARE
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
        -- (not current_schema(): with the pinned search_path, that is pg_catalog)
        FROM pg_namespace n
        WHERE n.oid = (SELECT relnamespace FROM pg_class WHERE oid = 'machines'::regclass)
        UNION ALL
        SELECT 'SELECT', 'TABLE', quote_ident(c.relname),
               coalesce(c.relacl, acldefault('r', c.relowner))
        FROM pg_class c
        WHERE c.oid IN ('machines'::regclass, 'machine_state'::regclass,
                        'machine_state_transitions'::regclass)
        UNION ALL
        SELECT 'EXECUTE', 'FUNCTION', p.oid::regprocedure::text,
               coalesce(p.proacl, acldefault('f', p.proowner))
        FROM pg_proc p
        WHERE p.oid IN (
            'machine_state_transition(uuid, text, text, uuid, text, uuid)'::regprocedure,
            'atomic_update_machine_state(uuid, text, uuid, boolean, text)'::regprocedure,
            'atomic_complete_machine_state(uuid)'::regprocedure,
            'atomic_error_machine_state(uuid, text)'::regprocedure,
            'atomic_processing_machine_state(uuid, uuid)'::regprocedure)
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
        INSERT INTO machine_state_application_grants VALUES
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

CREATE FUNCTION machine_state_revoke_application(p_role regrole) RETURNS SETOF text
LANGUAGE plpgsql
AS $fn$
DECLARE
    granted record;
    statement text;
BEGIN
    FOR granted IN
        DELETE FROM machine_state_application_grants WHERE grantee = p_role
        RETURNING *
    LOOP
        statement := format('REVOKE %s ON %s %s FROM %s',
                            granted.privilege, granted.object_type, granted.object, granted.grantee);
        EXECUTE statement;
        RETURN NEXT statement;
    END LOOP;
END
$fn$;

DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
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
