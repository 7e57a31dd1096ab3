-- A transition that also says why it did not apply (see statement.rs): reads
-- both rows and the operation id, writes under the same guard as applied.sql,
-- and returns one row: the time if it applied, else what it found.
-- Binds: 1 machine id, 2 from state, 3 expected process, 4 to state,
-- 5 new process, 6 description, 7 operation id, 8 lock timeout.
-- In psql: PREPARE transition AS <this file>; EXECUTE transition(...);
WITH p AS (
    SELECT $1::uuid AS machine_id, $2::text AS from_state, $3::uuid AS expected_process,
           $4::text AS to_state, $5::uuid AS new_process, $6::text AS description,
           $7::uuid AS operation_id, set_config('lock_timeout', $8, true) AS lock_timeout,
           current_setting('transaction_isolation') AS isolation
), cur AS (
    SELECT m.status, m.current_process_id, s.current_state, s.process_id
    FROM p JOIN machines m ON m.id = p.machine_id
    LEFT JOIN machine_state s ON s.machine_id = m.id
), prior AS (
    SELECT t.machine_id, t.from_state, t.to_state, t.transitioned_at
    FROM p JOIN machine_state_transitions t ON t.operation_id = p.operation_id
), guard AS (
    SELECT FROM p, cur
    WHERE p.isolation = 'repeatable read'
      AND p.lock_timeout IS NOT NULL
      AND NOT EXISTS (SELECT FROM prior)
      AND cur.status = p.from_state
      AND cur.current_state = p.from_state
      AND cur.current_process_id IS NOT DISTINCT FROM p.expected_process
      AND cur.process_id IS NOT DISTINCT FROM p.expected_process
), machine_row AS (
    UPDATE machines m
    SET status = p.to_state, current_process_id = p.new_process, updated_at = now()
    FROM p
    WHERE m.id = p.machine_id AND EXISTS (SELECT FROM guard)
    RETURNING m.id
), state_row AS (
    UPDATE machine_state s
    SET current_state = p.to_state,
        process_id = p.new_process,
        state_since = now(),
        updated_at = now(),
        is_failure_mode = (p.to_state = 'error'),
        failure_component = NULL,
        failure_description = CASE WHEN p.to_state = 'error' THEN p.description END
    FROM p
    WHERE s.machine_id IN (SELECT id FROM machine_row)
    RETURNING s.machine_id
), entry AS (
    INSERT INTO machine_state_transitions
        (machine_id, from_state, to_state, process_id, description, operation_id, kind,
         transitioned_at, isolation_level)
    SELECT r.machine_id, p.from_state, p.to_state, coalesce(p.new_process, p.expected_process),
           p.description, p.operation_id, 'transition', now(), p.isolation
    FROM state_row r, p
    RETURNING transitioned_at
)
SELECT (SELECT transitioned_at FROM entry),
       prior.machine_id, prior.from_state, prior.to_state, prior.transitioned_at,
       cur.status, cur.current_process_id, cur.current_state, cur.process_id,
       p.isolation
FROM p LEFT JOIN cur ON true LEFT JOIN prior ON true
