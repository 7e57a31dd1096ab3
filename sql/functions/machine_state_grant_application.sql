-- The current definition of machine_state_grant_application, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.machine_state_grant_application(p_role regrole)
 RETURNS SETOF text
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
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
$function$;

COMMENT ON FUNCTION public.machine_state_grant_application(p_role regrole) IS 'Grants an application role what it needs and nothing more: USAGE on the schema, SELECT on the three tables, EXECUTE on `machine_state_transition` and the `atomic_*` functions; records it in `machine_state_private.application_grants`, returns each statement, and warns if the role can still write the tables through grants made elsewhere. Run by the migration owner (`machine-state grant`, sql/roles.sql). SQLSTATEs: MS005 no role given; 42501 for other roles.';
