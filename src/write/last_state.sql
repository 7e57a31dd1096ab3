-- The state a machine's history ends in ($1: the machine id): its latest
-- entry's, named by machine_state.history_head; without a head (no state row,
-- or no entry since the history was partitioned), the newest entry of the
-- default partition (its index on (machine_id, id)).
SELECT coalesce(
    (SELECT t.to_state
     FROM machine_state s
     JOIN machine_state_transitions t ON t.operation_id = s.history_head
     WHERE s.machine_id = $1),
    (SELECT t.to_state
     FROM machine_state_transitions_default t
     WHERE t.machine_id = $1
     ORDER BY t.id DESC
     LIMIT 1)) AS to_state
