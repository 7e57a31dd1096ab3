-- A machine's history, oldest first ($1: the machine id). The entries written
-- since migration 2026-12-05-300000 form a chain: machine_state.history_head
-- names the latest, each entry its previous one (previous_operation_id), so
-- each step is one lookup of the unique index on operation_id, whatever the
-- partition. Entries written before that migration have no link: they are in
-- the default partition, found by its index on (machine_id, id), older than
-- every linked one.
WITH RECURSIVE chain AS (
    SELECT t.*
    FROM machine_state s
    JOIN machine_state_transitions t ON t.operation_id = s.history_head
    WHERE s.machine_id = $1 AND t.machine_id = $1
    UNION ALL
    SELECT t.*
    FROM chain c
    JOIN machine_state_transitions t ON t.operation_id = c.previous_operation_id
    WHERE t.machine_id = $1
)
SELECT id, machine_id, from_state, to_state, process_id, description, operation_id, kind,
       transitioned_at, isolation_level, verb
FROM (
    SELECT * FROM chain
    UNION ALL
    SELECT t.*
    FROM machine_state_transitions_default t
    WHERE t.machine_id = $1
      AND t.id < coalesce((SELECT min(c.id) FROM chain c), 9223372036854775807)
) entries
ORDER BY id
