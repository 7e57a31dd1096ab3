-- The legacy pattern, first (or second) half: `machines` alone, a blind
-- overwrite. $1 machine, $2 state, $3 process, $4 time.
UPDATE machines SET status = $2, current_process_id = $3, updated_at = $4 WHERE id = $1
