-- The legacy pattern, the other half: `machine_state` alone, a blind
-- overwrite. $1 machine, $2 state, $3 process, $4 time, $5 description.
UPDATE machine_state
SET current_state = $2, process_id = $3, state_since = $4, updated_at = $4,
    is_failure_mode = ($2 = 'error'), failure_description = $5
WHERE machine_id = $1
