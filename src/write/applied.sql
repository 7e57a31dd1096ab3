-- A transition's success path (see statement.rs): write both rows, only if
-- both hold the expected state and process and the transaction is
-- REPEATABLE READ, and append the history row. Returns the transition's time
-- (NULL when it wrote nothing) and the isolation level it ran under. Under
-- REPEATABLE READ a concurrent change of either row makes it fail with 40001.
-- Binds: 1 machine id, 2 from state, 3 expected process, 4 to state,
-- 5 new process, 6 description, 7 operation id, 8 lock timeout, 9 verb.
-- In psql: PREPARE applied(uuid, text, uuid, text, uuid, text, uuid, text, text)
--          AS <this file>; EXECUTE applied(...);
WITH machine_row AS (
    UPDATE machines m
    SET status = $4, current_process_id = $5, updated_at = now()
    FROM machine_state s
    WHERE m.id = $1 AND s.machine_id = m.id
      AND m.status = $2 AND s.current_state = $2
      AND m.current_process_id IS NOT DISTINCT FROM $3
      AND s.process_id IS NOT DISTINCT FROM $3
      AND (SELECT set_config('lock_timeout', $8, true)) IS NOT NULL
      AND current_setting('transaction_isolation') = 'repeatable read'
    RETURNING m.id
), state_row AS (
    UPDATE machine_state s
    SET current_state = $4,
        process_id = $5,
        state_since = now(),
        updated_at = now(),
        is_failure_mode = ($4 = 'error'),
        failure_component = NULL,
        failure_description = CASE WHEN $4 = 'error' THEN $6 END
    WHERE s.machine_id IN (SELECT id FROM machine_row)
    RETURNING s.machine_id
), entry AS (
    INSERT INTO machine_state_transitions
        (machine_id, from_state, to_state, process_id, description, operation_id, kind,
         transitioned_at, isolation_level, verb)
    SELECT r.machine_id, $2, $4, coalesce($5, $3), $6, $7, 'transition', now(),
           current_setting('transaction_isolation'), $9
    FROM state_row r
    RETURNING transitioned_at
)
SELECT (SELECT transitioned_at FROM entry), current_setting('transaction_isolation')
