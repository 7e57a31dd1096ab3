-- Back to one unpartitioned table, keeping every row: the default partition
-- (the table as it was) is detached, the daily partitions' entries are copied
-- into it, and it takes its name, identity and the functions back.

CREATE TEMPORARY TABLE machine_state_history_functions ON COMMIT DROP AS
SELECT p.oid::regprocedure::text AS signature, pg_get_functiondef(p.oid) AS definition,
       p.proowner, coalesce(p.proacl, acldefault('f', p.proowner)) AS acl,
       obj_description(p.oid, 'pg_proc') AS comment
FROM pg_proc p
WHERE p.prorettype = 'machine_state_transitions'::regtype
   OR 'machine_state_transitions'::regtype = ANY (p.proargtypes::oid[]);

DO $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT signature FROM machine_state_history_functions ORDER BY signature DESC LOOP
        EXECUTE format('DROP FUNCTION %s', f.signature);
    END LOOP;
END
$$;

DO $$
BEGIN
    EXECUTE replace(replace(pg_get_functiondef('machine_state_grant_application(regrole)'::regprocedure),
                            $q$c.relkind IN ('r', 'p')$q$, $q$c.relkind = 'r'$q$),
                    $q$'machine_state_transitions', 'machine_state_transitions_default',$q$,
                    $q$'machine_state_transitions',$q$);
END
$$;
-- The default partition becomes the table again: its grants are the table's,
-- recorded under its name.
DELETE FROM machine_state_private.application_grants
WHERE object = 'machine_state_transitions_default';

DROP FUNCTION machine_state_prune_history(interval, integer);
DROP FUNCTION machine_state_prepare_history(integer, timestamptz);
DROP FUNCTION machine_state_private.uuid_v7_bound(timestamptz);

ALTER TABLE machine_state_transitions DETACH PARTITION machine_state_transitions_default;
DROP TRIGGER IF EXISTS machine_state_transitions_link ON machine_state_transitions_default;
INSERT INTO machine_state_transitions_default SELECT * FROM machine_state_transitions;
DROP TABLE machine_state_transitions;
DROP FUNCTION machine_state_transitions_link();
ALTER TABLE machine_state DROP COLUMN history_head;

ALTER TABLE machine_state_transitions_default RENAME TO machine_state_transitions;
ALTER TABLE machine_state_transitions
    RENAME CONSTRAINT machine_state_transitions_default_operation_id_key
    TO machine_state_transitions_operation_id_key;
ALTER TABLE machine_state_transitions DROP COLUMN previous_operation_id;
ALTER TABLE machine_state_transitions ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;
SELECT setval(pg_get_serial_sequence('machine_state_transitions', 'id'), max(id))
FROM machine_state_transitions HAVING max(id) IS NOT NULL;
-- The identity's sequence is the owner's alone, as migration
-- 2026-12-01-000001 left the one it replaces (default privileges taken back).
DO $$
DECLARE
    v_seq regclass := pg_get_serial_sequence('machine_state_transitions', 'id')::regclass;
    g record;
BEGIN
    FOR g IN SELECT DISTINCT a.grantee
             FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('S', c.relowner))) a
             WHERE c.oid = v_seq AND a.grantee <> c.relowner LOOP
        EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %s', v_seq,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END);
    END LOOP;
END
$$;

DO $$
DECLARE
    f record;
    g record;
    v_new regprocedure;
BEGIN
    FOR f IN SELECT * FROM machine_state_history_functions ORDER BY signature LOOP
        EXECUTE f.definition;
        v_new := f.signature::regprocedure;
        IF (SELECT proowner FROM pg_proc WHERE oid = v_new) <> f.proowner THEN
            EXECUTE format('ALTER FUNCTION %s OWNER TO %I', v_new, f.proowner::regrole);
        END IF;
        FOR g IN SELECT DISTINCT a.grantee
                 FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                 WHERE p.oid = v_new AND a.grantee <> p.proowner LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', v_new,
                           CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END);
        END LOOP;
        FOR g IN SELECT a.grantee, a.is_grantable FROM aclexplode(f.acl) a
                 WHERE a.grantee <> f.proowner LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s%s', v_new,
                           CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END,
                           CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
        EXECUTE format('COMMENT ON FUNCTION %s IS %L', v_new, f.comment);
    END LOOP;
END
$$;
