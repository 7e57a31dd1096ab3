DROP FUNCTION atomic_processing_machine_state(uuid, uuid);
DROP FUNCTION atomic_error_machine_state(uuid, text);
DROP FUNCTION atomic_complete_machine_state(uuid);
DROP FUNCTION atomic_update_machine_state(uuid, text, uuid, boolean, text);
DROP FUNCTION machine_state_transition_result(machine_state_transitions);
DROP FUNCTION machine_state_transition(uuid, text, text, uuid, text, uuid);

-- Put back what up.sql replaced: the legacy functions, moved back whole (same
-- oid, owner, grants and comment), into the schema they came from.
DO $$
DECLARE
    legacy regprocedure;
BEGIN
    FOR legacy IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'machine_state_replaced'::regnamespace
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET SCHEMA %I', legacy, current_schema());
    END LOOP;
END
$$;
DROP SCHEMA machine_state_replaced;
