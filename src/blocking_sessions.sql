-- The sessions that made a migration's lock wait time out: every other
-- session of this database that holds a lock on a table or index and whose
-- transaction began before the wait did (at least $1, the lock timeout in
-- milliseconds, ago: whoever held the lock held it all along). The oldest
-- transaction first. A session of another role that the migrating role may
-- not see (without pg_read_all_stats) shows only its pid: its other columns
-- are NULL, so it cannot be ruled out by its start either.
SELECT a.pid,
       coalesce(a.application_name, '') AS application_name,
       coalesce(a.state, 'unknown') AS state,
       a.xact_start,
       a.state_change,
       coalesce(a.query, '') AS query
FROM pg_stat_activity a
WHERE a.pid <> pg_backend_pid()
  AND (a.xact_start IS NULL
       OR a.xact_start <= clock_timestamp() - make_interval(secs => $1 / 1000.0))
  AND EXISTS (
      SELECT FROM pg_locks l
      WHERE l.pid = a.pid AND l.granted AND l.locktype = 'relation'
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
ORDER BY a.xact_start NULLS LAST, a.pid
LIMIT 10
