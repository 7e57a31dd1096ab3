-- The session whose transaction holds a row lock on machine $1's rows: a
-- row's xmax is the id of the transaction that updated or locked it (a
-- MultiXact for several share lockers: not matched). Sessions the role may
-- not see have a NULL backend_xid and are not matched either.
SELECT a.pid, coalesce(a.state, 'unknown') AS state, coalesce(a.query, '') AS query
FROM machines m
LEFT JOIN machine_state s ON s.machine_id = m.id
JOIN pg_stat_activity a ON a.backend_xid = m.xmax OR a.backend_xid = s.xmax
WHERE m.id = $1 AND a.pid <> pg_backend_pid()
LIMIT 1
