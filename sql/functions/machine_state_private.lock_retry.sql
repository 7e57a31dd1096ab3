-- The current definition of machine_state_private.lock_retry, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION machine_state_private.lock_retry(p_attempt integer, p_started timestamp with time zone, p_budget interval, p_lock_timeout interval, p_tables regclass[], p_what text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_left interval := p_started + p_budget - clock_timestamp();
    v_pause interval := least(random() * p_lock_timeout * power(2, least(p_attempt, 16) - 1),
                              interval '5 seconds');
    v_holders text;
BEGIN
    IF v_left < p_lock_timeout THEN
        SELECT string_agg(format('backend %s (%s%s)', a.pid,
                                 coalesce(nullif(a.application_name, '') || ', ', ''),
                                 coalesce(a.state, 'unknown')), '; ' ORDER BY a.pid)
        INTO v_holders
        FROM pg_stat_activity a
        WHERE a.pid <> pg_backend_pid()
          AND EXISTS (SELECT FROM pg_locks l
                      WHERE l.pid = a.pid AND l.granted AND l.locktype = 'relation'
                        AND (l.relation = ANY (p_tables)
                             OR l.relation IN (SELECT i.inhrelid FROM pg_inherits i
                                               WHERE i.inhparent = ANY (p_tables))));
        RAISE EXCEPTION USING ERRCODE = '55P03',
            MESSAGE = format('%s gave up after %s attempt(s) in %s: other sessions held the tables'' locks: %s',
                             p_what, p_attempt,
                             date_trunc('milliseconds', clock_timestamp() - p_started),
                             coalesce(v_holders, 'none visible to this role (they may have ended)')),
            HINT = 'End them (SELECT pg_terminate_backend(pid)) or wait for them, and run it again.';
    END IF;
    PERFORM pg_sleep(extract(epoch FROM least(v_pause, v_left - p_lock_timeout)));
END
$function$;

COMMENT ON FUNCTION machine_state_private.lock_retry(p_attempt integer, p_started timestamp with time zone, p_budget interval, p_lock_timeout interval, p_tables regclass[], p_what text) IS 'Between two attempts of a step whose lock wait timed out (`machine_state_prepare_history`, `machine_state_prune_history`, `machine_state_private.lock_pair_tables`): pauses (jittered, growing, at most 5 s), or raises 55P03 naming the sessions holding `p_tables` (or their partitions) once the budget cannot hold another wait.';
