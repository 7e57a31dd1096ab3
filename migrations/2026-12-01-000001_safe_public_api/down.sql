-- Put back what up.sql changed. Privileges it revoked from roles other than
-- the owner are not granted again: they came from default privileges, and
-- the objects they were on are dropped by the earlier migrations' down.sql
-- (diesel's own table keeps its tighter ACL).

-- 5. Parked legacy functions, as they were.
DO $$
DECLARE
    parked record;
BEGIN
    FOR parked IN
        SELECT * FROM machine_state_private.public_api_changes WHERE change = 'parked'
    LOOP
        IF NOT parked.had_search_path THEN
            EXECUTE format('ALTER FUNCTION %s RESET search_path', parked.object);
        END IF;
        IF parked.was_security_definer THEN
            EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER', parked.object);
        END IF;
    END LOOP;
END
$$;

-- 4. Row level security off where up.sql turned it on.
DO $$
DECLARE
    changed record;
BEGIN
    FOR changed IN
        SELECT object FROM machine_state_private.public_api_changes WHERE change = 'rls'
    LOOP
        EXECUTE format('DROP POLICY machine_state_read ON %s', changed.object);
        EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', changed.object);
    END LOOP;
END
$$;

-- 1. The legacy RPCs as migration 000003 made them. Roles granted the
-- seven-parameter `atomic_update_machine_state` through us get the old one.
CREATE TEMPORARY TABLE machine_state_regrant ON COMMIT DROP AS
    SELECT grantee FROM machine_state_private.application_grants
    WHERE object_type = 'FUNCTION'
      AND object = 'atomic_update_machine_state(uuid,text,uuid,text,uuid,boolean,text)';
DELETE FROM machine_state_private.application_grants
WHERE object_type = 'FUNCTION'
  AND object = 'atomic_update_machine_state(uuid,text,uuid,text,uuid,boolean,text)';
DROP FUNCTION atomic_update_machine_state(uuid, text, uuid, text, uuid, boolean, text);

-- Legacy core: move a machine to `p_status` from whatever state it is in now.
-- `p_process_id` is the new run when entering `processing`; when leaving it, the
-- run expected to end (defaults to the current one, as legacy callers did not fence).
CREATE FUNCTION atomic_update_machine_state(
    p_machine_id uuid,
    p_status text,
    p_process_id uuid DEFAULT NULL,
    p_is_failure_mode boolean DEFAULT NULL,
    p_failure_description text DEFAULT NULL
) RETURNS json
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_status text;
    v_process uuid;
BEGIN
    IF p_is_failure_mode IS NOT NULL AND p_is_failure_mode IS DISTINCT FROM (p_status = 'error') THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = format('`is_failure_mode` %s does not match status `%s`', p_is_failure_mode, p_status);
    END IF;
    SELECT status, current_process_id INTO v_status, v_process FROM machines WHERE id = p_machine_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'MS003',
            MESSAGE = format('machine `%s` not found', p_machine_id);
    END IF;
    RETURN machine_state_transition_result(machine_state_transition(
        p_machine_id, v_status, p_status,
        CASE WHEN v_status = 'processing' THEN coalesce(p_process_id, v_process) ELSE p_process_id END,
        p_failure_description));
END
$fn$;

-- Legacy executor: the recipe failed, `processing` -> `error`.
CREATE OR REPLACE FUNCTION atomic_error_machine_state(p_machine_id uuid, p_error_message text) RETURNS json
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_process uuid;
BEGIN
    SELECT current_process_id INTO v_process FROM machines WHERE id = p_machine_id;
    RETURN machine_state_transition_result(machine_state_transition(
        p_machine_id, 'processing', 'error', v_process, p_error_message));
END
$fn$;

-- The JSON result the legacy Python wrappers read.
CREATE OR REPLACE FUNCTION machine_state_transition_result(p_entry machine_state_transitions) RETURNS json
LANGUAGE sql IMMUTABLE
AS $fn$
    SELECT json_build_object(
        'success', true,
        'machine_id', p_entry.machine_id,
        'previous_state', p_entry.from_state,
        'new_state', p_entry.to_state,
        'process_id', p_entry.process_id,
        'operation_id', p_entry.operation_id,
        'transitioned_at', p_entry.transitioned_at,
        'isolation_level', p_entry.isolation_level
    )
$fn$;

CREATE OR REPLACE FUNCTION machine_state_grant_application(p_role regrole) RETURNS SETOF text
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

CREATE OR REPLACE FUNCTION machine_state_revoke_application(p_role regrole) RETURNS SETOF text
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

ALTER FUNCTION atomic_update_machine_state(uuid, text, uuid, boolean, text) SECURITY DEFINER;
ALTER FUNCTION atomic_error_machine_state(uuid, text) SECURITY DEFINER;
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'machine_state_transition_result(machine_state_transitions)',
        'atomic_update_machine_state(uuid, text, uuid, boolean, text)',
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

DO $$
DECLARE
    granted record;
BEGIN
    FOR granted IN SELECT grantee FROM machine_state_regrant
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s',
                       'atomic_update_machine_state(uuid,text,uuid,boolean,text)', granted.grantee);
        INSERT INTO machine_state_private.application_grants VALUES
            (granted.grantee, 'EXECUTE', 'FUNCTION',
             'atomic_update_machine_state(uuid,text,uuid,boolean,text)');
    END LOOP;
END
$$;

-- 2. Bookkeeping back where migrations 000001 and 000005 keep it.
DROP TABLE machine_state_private.public_api_changes;
ALTER TABLE machine_state_private.application_grants RENAME TO machine_state_application_grants;
ALTER TABLE machine_state_private.adopted_objects RENAME TO machine_state_adopted_objects;
DO $$
BEGIN
    EXECUTE format('ALTER TABLE machine_state_private.machine_state_application_grants SET SCHEMA %I',
                   current_schema());
    EXECUTE format('ALTER TABLE machine_state_private.machine_state_adopted_objects SET SCHEMA %I',
                   current_schema());
END
$$;
DROP SCHEMA machine_state_private;
