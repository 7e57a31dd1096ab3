-- The current definition of machine_state_revoke_application, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.machine_state_revoke_application(p_role regrole)
 RETURNS SETOF text
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
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
$function$;

COMMENT ON FUNCTION public.machine_state_revoke_application(p_role regrole) IS 'Takes back exactly what `machine_state_grant_application` granted the role, and returns each statement. Run by the migration owner (`machine-state revoke`). SQLSTATE 42501 for other roles.';
