-- Every comment up.sql set goes back to what it was: NULL, or the comment it
-- replaced (kept in `machine_state_private.earlier_comments`: a legacy
-- system's on the tables it owned, earlier migrations' such as
-- 2026-12-05-100000's on `machine_state_transitions.verb`).

COMMENT ON TABLE machines IS NULL;
COMMENT ON COLUMN machines.id IS NULL;
COMMENT ON COLUMN machines.status IS NULL;
COMMENT ON COLUMN machines.current_process_id IS NULL;
COMMENT ON COLUMN machines.created_at IS NULL;
COMMENT ON COLUMN machines.updated_at IS NULL;

COMMENT ON TABLE machine_state IS NULL;
COMMENT ON COLUMN machine_state.machine_id IS NULL;
COMMENT ON COLUMN machine_state.current_state IS NULL;
COMMENT ON COLUMN machine_state.state_since IS NULL;
COMMENT ON COLUMN machine_state.process_id IS NULL;
COMMENT ON COLUMN machine_state.is_failure_mode IS NULL;
COMMENT ON COLUMN machine_state.failure_component IS NULL;
COMMENT ON COLUMN machine_state.failure_description IS NULL;
COMMENT ON COLUMN machine_state.updated_at IS NULL;
COMMENT ON COLUMN machine_state.history_head IS NULL;

COMMENT ON TABLE machine_state_transitions IS NULL;
COMMENT ON COLUMN machine_state_transitions.id IS NULL;
COMMENT ON COLUMN machine_state_transitions.machine_id IS NULL;
COMMENT ON COLUMN machine_state_transitions.from_state IS NULL;
COMMENT ON COLUMN machine_state_transitions.to_state IS NULL;
COMMENT ON COLUMN machine_state_transitions.process_id IS NULL;
COMMENT ON COLUMN machine_state_transitions.description IS NULL;
COMMENT ON COLUMN machine_state_transitions.operation_id IS NULL;
COMMENT ON COLUMN machine_state_transitions.kind IS NULL;
COMMENT ON COLUMN machine_state_transitions.transitioned_at IS NULL;
COMMENT ON COLUMN machine_state_transitions.isolation_level IS NULL;
COMMENT ON COLUMN machine_state_transitions.verb IS NULL;
COMMENT ON COLUMN machine_state_transitions.previous_operation_id IS NULL;

COMMENT ON FUNCTION machine_state_transition(uuid, text, text, uuid, text, uuid, text) IS NULL;
COMMENT ON FUNCTION machine_state_transition_result(machine_state_transitions) IS NULL;
COMMENT ON FUNCTION atomic_update_machine_state(uuid, text, uuid, text, uuid, boolean, text) IS NULL;
COMMENT ON FUNCTION atomic_processing_machine_state(uuid, uuid) IS NULL;
COMMENT ON FUNCTION atomic_complete_machine_state(uuid) IS NULL;
COMMENT ON FUNCTION atomic_error_machine_state(uuid, text) IS NULL;
COMMENT ON FUNCTION atomic_stop_machine_state(uuid, uuid) IS NULL;
COMMENT ON FUNCTION machine_state_pair_violations(machines, machine_state) IS NULL;
COMMENT ON FUNCTION machine_state_check_pairs(uuid[], text, text) IS NULL;
COMMENT ON FUNCTION machine_state_check_machines_pair() IS NULL;
COMMENT ON FUNCTION machine_state_check_machine_state_pair() IS NULL;
COMMENT ON FUNCTION machine_state_enforce_invariants() IS NULL;
COMMENT ON FUNCTION machine_state_relax_invariants() IS NULL;
COMMENT ON FUNCTION machine_state_invariants_enforced() IS NULL;
COMMENT ON FUNCTION machine_state_transitions_link() IS NULL;
COMMENT ON FUNCTION machine_state_prepare_history(integer, timestamptz) IS NULL;
COMMENT ON FUNCTION machine_state_prune_history(interval, integer) IS NULL;
COMMENT ON FUNCTION machine_state_grant_application(regrole) IS NULL;
COMMENT ON FUNCTION machine_state_revoke_application(regrole) IS NULL;
COMMENT ON FUNCTION machine_state_private.uuid_v7() IS NULL;
COMMENT ON FUNCTION machine_state_private.uuid_v7_bound(timestamptz) IS NULL;

DO $$
DECLARE
    earlier record;
BEGIN
    FOR earlier IN
        SELECT e.classoid, e.objoid, e.objsubid, e.description, a.attname
        FROM machine_state_private.earlier_comments e
        LEFT JOIN pg_catalog.pg_attribute a
            ON e.classoid = 'pg_catalog.pg_class'::regclass
           AND a.attrelid = e.objoid AND a.attnum = e.objsubid
    LOOP
        IF earlier.classoid = 'pg_catalog.pg_proc'::regclass THEN
            EXECUTE format('COMMENT ON FUNCTION %s IS %L',
                           earlier.objoid::regprocedure, earlier.description);
        ELSIF earlier.objsubid = 0 THEN
            EXECUTE format('COMMENT ON TABLE %s IS %L',
                           earlier.objoid::regclass, earlier.description);
        ELSE
            EXECUTE format('COMMENT ON COLUMN %s.%I IS %L',
                           earlier.objoid::regclass, earlier.attname, earlier.description);
        END IF;
    END LOOP;
END
$$;

DROP TABLE machine_state_private.earlier_comments;
