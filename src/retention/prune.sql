-- One batch of the history's retention: delete at most $2 entries older than
-- $1 seconds, oldest first, but never a machine's latest entry (the history
-- must end in the current state: I6). Returns the number deleted.
WITH doomed AS (
    SELECT t.id
    FROM machine_state_transitions t
    WHERE t.transitioned_at < now() - make_interval(secs => $1)
      AND t.id < (SELECT max(latest.id) FROM machine_state_transitions latest
                  WHERE latest.machine_id = t.machine_id)
    ORDER BY t.id
    LIMIT $2
),
deleted AS (
    DELETE FROM machine_state_transitions
    WHERE id IN (SELECT id FROM doomed)
    RETURNING 1
)
SELECT count(*) AS deleted FROM deleted
