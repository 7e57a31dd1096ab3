-- Writing a repaired pair (see repair.rs; the policy is the audit's): both
-- rows, the `machine_state` row inserted if it is missing, and a `repair`
-- history entry, in one statement. The caller runs it in the REPEATABLE
-- READ transaction in which it found the pair still as the audit read it.
-- Binds: 1 machine id, 2 state, 3 process id, 4 failure description,
-- 5 from state (the history's last state, else what `machines` held),
-- 6 note, 7 operation id.
-- In psql: PREPARE repair(uuid, text, uuid, text, text, text, uuid)
--          AS <this file>; EXECUTE repair(...);
WITH machine_row AS (
    UPDATE machines
    SET status = $2, current_process_id = $3, updated_at = now()
    WHERE id = $1
    RETURNING id
), updated_state AS (
    UPDATE machine_state
    SET current_state = $2,
        process_id = $3,
        state_since = now(),
        updated_at = now(),
        is_failure_mode = ($2 = 'error'),
        failure_component = NULL,
        failure_description = $4
    WHERE machine_id = $1
    RETURNING machine_id
), inserted_state AS (
    INSERT INTO machine_state
        (machine_id, current_state, process_id, state_since, updated_at, is_failure_mode,
         failure_component, failure_description)
    SELECT $1, $2, $3, now(), now(), ($2 = 'error'), NULL, $4
    WHERE NOT EXISTS (SELECT FROM machine_state WHERE machine_id = $1)
    RETURNING machine_id
)
-- The entry is inserted after the state row is written (it reads the state
-- CTEs): the history's BEFORE INSERT trigger then updates that row's
-- `history_head` (migration 2026-12-05-300000), which the CTE could not
-- update again in the same statement.
INSERT INTO machine_state_transitions
    (machine_id, from_state, to_state, process_id, description, operation_id, kind, verb)
SELECT $1, $5, $2, $3, $6, $7, 'repair', 'repair'
FROM (SELECT machine_id FROM updated_state
      UNION ALL
      SELECT machine_id FROM inserted_state) state_row
