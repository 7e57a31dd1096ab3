-- A transition through the SQL functions never waits unboundedly for another
-- session's row lock (a stalled legacy writer, an operator's open psql
-- transaction): each function that locks a machine's rows runs with
-- `lock_timeout = 5s`, after which it fails with SQLSTATE 55P03 (retryable,
-- nothing written). A function-level setting: it holds for the function's
-- duration only, and leaks into no session (a transaction-mode pooler's
-- included). Change it per function with
--   ALTER FUNCTION atomic_complete_machine_state(uuid) SET lock_timeout = '2s';
--
-- By name, whatever the arguments: the functions of this crate's schema
-- only (not the legacy ones parked in `machine_state_replaced`).
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
        FROM pg_proc p
        WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
          AND p.proname IN ('machine_state_transition', 'atomic_update_machine_state',
                            'atomic_complete_machine_state', 'atomic_error_machine_state',
                            'atomic_processing_machine_state')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET lock_timeout = %L', f, '5s');
    END LOOP;
END $$;
