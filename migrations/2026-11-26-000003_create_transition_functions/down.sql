DROP FUNCTION atomic_processing_machine_state(uuid, uuid);
DROP FUNCTION atomic_error_machine_state(uuid, text);
DROP FUNCTION atomic_complete_machine_state(uuid);
DROP FUNCTION atomic_update_machine_state(uuid, text, uuid, boolean, text);
DROP FUNCTION machine_state_transition_result(machine_state_transitions);
DROP FUNCTION machine_state_transition(uuid, text, text, uuid, text, uuid);

-- Put back what up.sql replaced (the legacy functions, exactly as they were).
DO $$
DECLARE
    legacy record;
BEGIN
    FOR legacy IN SELECT definition FROM machine_state_replaced_functions LOOP
        EXECUTE legacy.definition;
    END LOOP;
END
$$;
DROP TABLE machine_state_replaced_functions;
