-- Why a transition did not (or would not) apply (see statement.rs): reads,
-- in one snapshot, both rows of the machine and the history entry of the
-- operation id, and the isolation level; writes nothing. The first column is
-- always NULL (no transition time), so its row has the shape of an outcome.
-- Binds: 1 machine id, 2 operation id, 3 lock timeout.
-- In psql: PREPARE diagnosis(uuid, uuid, text) AS <this file>;
--          EXECUTE diagnosis(...);
WITH p AS (
    SELECT $1::uuid AS machine_id, $2::uuid AS operation_id,
           set_config('lock_timeout', $3, true) AS lock_timeout,
           current_setting('transaction_isolation') AS isolation
), cur AS (
    SELECT m.status, m.current_process_id, s.current_state, s.process_id
    FROM p JOIN machines m ON m.id = p.machine_id
    LEFT JOIN machine_state s ON s.machine_id = m.id
), prior AS (
    SELECT t.machine_id, t.from_state, t.to_state, t.transitioned_at, t.verb
    FROM p JOIN machine_state_transitions t ON t.operation_id = p.operation_id
)
SELECT NULL::timestamptz,
       prior.machine_id, prior.from_state, prior.to_state, prior.transitioned_at, prior.verb,
       cur.status, cur.current_process_id, cur.current_state, cur.process_id,
       p.isolation
FROM p LEFT JOIN cur ON true LEFT JOIN prior ON true
