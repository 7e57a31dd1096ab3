-- Registering a machine (see create.rs): both rows in `state` and the
-- machine's first history entry, in one statement. Returns the time of the
-- registration. A machine id already taken fails on `machines_pkey`.
-- Binds: 1 machine id, 2 state, 3 operation id.
-- In psql: PREPARE create_machine(uuid, text, uuid) AS <this file>;
--          EXECUTE create_machine(...);
WITH p AS (
    SELECT $1::uuid AS machine_id, $2::text AS state, $3::uuid AS operation_id
), machine_row AS (
    INSERT INTO machines (id, status, current_process_id, created_at, updated_at)
    SELECT machine_id, state, NULL, now(), now() FROM p
    RETURNING id
), state_row AS (
    INSERT INTO machine_state
        (machine_id, current_state, state_since, process_id, is_failure_mode, updated_at)
    SELECT r.id, p.state, now(), NULL, false, now() FROM machine_row r, p
    RETURNING machine_id
)
INSERT INTO machine_state_transitions
    (machine_id, from_state, to_state, operation_id, kind, transitioned_at, isolation_level,
     verb)
SELECT r.machine_id, NULL, p.state, p.operation_id, 'create', now(),
       current_setting('transaction_isolation'), 'create'
FROM state_row r, p
RETURNING transitioned_at
