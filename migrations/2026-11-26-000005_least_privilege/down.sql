-- Take back every grant up.sql's function made (roles dropped since are
-- skipped: DROP OWNED took their privileges with them), so the tables the
-- legacy system owns keep exactly the ACL they had before.
DO $$
DECLARE
    granted record;
BEGIN
    FOR granted IN
        SELECT g.* FROM machine_state_application_grants g
        WHERE EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = g.grantee)
    LOOP
        EXECUTE format('REVOKE %s ON %s %s FROM %s',
                       granted.privilege, granted.object_type, granted.object, granted.grantee);
    END LOOP;
END
$$;

DROP FUNCTION machine_state_revoke_application(regrole);
DROP FUNCTION machine_state_grant_application(regrole);
DROP TABLE machine_state_application_grants;

ALTER FUNCTION atomic_processing_machine_state(uuid, uuid) SECURITY INVOKER;
ALTER FUNCTION atomic_error_machine_state(uuid, text) SECURITY INVOKER;
ALTER FUNCTION atomic_complete_machine_state(uuid) SECURITY INVOKER;
ALTER FUNCTION atomic_update_machine_state(uuid, text, uuid, boolean, text) SECURITY INVOKER;
ALTER FUNCTION machine_state_transition(uuid, text, text, uuid, text, uuid) SECURITY INVOKER;
