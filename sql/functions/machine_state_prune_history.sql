-- The current definition of machine_state_prune_history, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.machine_state_prune_history(p_older_than interval, p_batch integer DEFAULT 10000)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_cutoff timestamptz := now() - p_older_than;
    v_bound uuid := machine_state_private.uuid_v7_bound(now() - p_older_than);
    v_lock_timeout interval;
    v_budget interval;
    v_setting text;
    v_caller_lock_timeout text := current_setting('lock_timeout');
    v_started timestamptz := clock_timestamp();
    v_attempt integer := 0;
    v_parts regclass[];
    v_part regclass;
    v_heads uuid[];
    v_in_parts bigint;
    v_kept bigint;
    v_kept_all bigint;
    v_removed bigint := 0::bigint;
    v_count bigint;
BEGIN
    IF p_older_than IS NULL OR p_older_than < interval '1 day' THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = format('the retention window must be at least 1 day, got %s: a retry inside it must still find its operation id',
                             coalesce(p_older_than::text, 'NULL'));
    END IF;
    IF p_batch IS NULL OR p_batch < 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005', MESSAGE = 'a batch must delete at least one entry';
    END IF;
    SELECT * INTO v_lock_timeout, v_budget, v_setting FROM machine_state_private.ddl_patience();
    -- The locks below are taken from what this transaction sees; a
    -- REPEATABLE READ snapshot could be older than them.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = format('cannot prune the history in a %s transaction', current_setting('transaction_isolation')),
            HINT = 'call it in autocommit or a READ COMMITTED transaction';
    END IF;
    -- Every lock wait of the run limited from here on (the caller's setting
    -- is put back at the end); a wait that times out outside the guarded
    -- steps fails the call (55P03), nothing removed.
    PERFORM set_config('lock_timeout', v_setting, true);
    -- 1. One at a time with prepare: SHARE UPDATE EXCLUSIVE on the history
    -- itself (ONLY: not on its partitions, where autovacuum works), which
    -- neither reads nor writes wait for.
    LOOP
        BEGIN
            LOCK TABLE ONLY machine_state_transitions IN SHARE UPDATE EXCLUSIVE MODE;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            v_attempt := v_attempt + 1;
            PERFORM machine_state_private.lock_retry(
                v_attempt, v_started, v_budget, v_lock_timeout,
                ARRAY['machine_state_transitions'::regclass], 'pruning the history');
        END;
    END LOOP;
    SELECT coalesce(array_agg(part ORDER BY high), ARRAY[]::regclass[]) INTO v_parts
    FROM (SELECT i.inhrelid::regclass AS part,
                 (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::uuid AS high
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'machine_state_transitions'::regclass
            AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT') daily
    WHERE high <= v_bound;
    -- 2. The default partition (entries from before the partitioning, and
    -- ids outside the daily ranges): deleted row by row, in batches, but
    -- never a machine's latest entry.
    LOOP
        DELETE FROM machine_state_transitions_default
        WHERE id IN (SELECT t.id FROM machine_state_transitions_default t
                     WHERE t.transitioned_at < v_cutoff
                       AND NOT EXISTS (SELECT 1 FROM machine_state s
                                       WHERE s.history_head = t.operation_id)
                     ORDER BY t.id LIMIT p_batch);
        GET DIAGNOSTICS v_count = ROW_COUNT;
        v_removed := v_removed + v_count;
        EXIT WHEN v_count < p_batch;
    END LOOP;
    -- 3. The old daily partitions, all in one attempt (a budget of its own:
    -- the deletes above may have taken long), so that a failed attempt
    -- releases every lock it took. Before the history is held exclusively:
    -- the partitions held still (SHARE: no entry lands in them) and counted;
    -- the rows of the machines whose latest entry is in one of them locked
    -- in the order a transition takes them (`machines`, for the foreign key
    -- the entry put back checks, then `machine_state`), and those entries'
    -- ids collected. Then each partition detached (ACCESS EXCLUSIVE on the
    -- history, held to the end: from there on only catalog changes and one
    -- index probe per latest entry), the latest entries put back (into the
    -- default partition, whose range now covers them), the rest dropped
    -- with the partition.
    v_started := clock_timestamp();
    v_attempt := 0;
    LOOP
        BEGIN
            v_in_parts := 0;
            v_kept_all := 0;
            v_heads := ARRAY[]::uuid[];
            FOREACH v_part IN ARRAY v_parts LOOP
                EXECUTE format('LOCK TABLE %s IN SHARE MODE', v_part);
                EXECUTE format('SELECT count(*) FROM %s', v_part) INTO v_count;
                v_in_parts := v_in_parts + v_count;
                EXECUTE format('SELECT count(*) FROM (SELECT FROM machines m JOIN machine_state s ON s.machine_id = m.id
                                JOIN %s d ON d.operation_id = s.history_head FOR KEY SHARE OF m) locked', v_part)
                INTO v_count;
                EXECUTE format('SELECT $1 || coalesce(array_agg(locked.history_head), ARRAY[]::uuid[])
                                FROM (SELECT s.history_head FROM machine_state s JOIN %s d
                                      ON d.operation_id = s.history_head FOR UPDATE OF s) locked', v_part)
                INTO v_heads USING v_heads;
            END LOOP;
            FOREACH v_part IN ARRAY v_parts LOOP
                EXECUTE format('ALTER TABLE machine_state_transitions DETACH PARTITION %s', v_part);
                EXECUTE format('INSERT INTO machine_state_transitions SELECT d.* FROM %s d
                                WHERE d.operation_id = ANY ($1)', v_part)
                USING v_heads;
                GET DIAGNOSTICS v_kept = ROW_COUNT;
                v_kept_all := v_kept_all + v_kept;
                EXECUTE format('DROP TABLE %s', v_part);
            END LOOP;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            v_attempt := v_attempt + 1;
            PERFORM machine_state_private.lock_retry(
                v_attempt, v_started, v_budget, v_lock_timeout,
                ARRAY['machine_state_transitions'::regclass], 'pruning the history');
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', v_caller_lock_timeout, true);
    RETURN v_removed + v_in_parts - v_kept_all;
END
$function$;

COMMENT ON FUNCTION public.machine_state_prune_history(p_older_than interval, p_batch integer) IS 'Removes the history entries older than `p_older_than` (at least 1 day) but each machine''s latest, so every chain still ends in the current state (I6): whole daily partitions are detached and dropped, the rest deleted in batches of `p_batch`; returns how many entries were removed. Run by the migration owner (`machine-state prune-history`, `machine_state::history::prune_history`). Every lock wait is limited to `machine_state.ddl_lock_timeout` (default 500 ms) and retried until `machine_state.ddl_budget` (default 60 s) is spent; the history is held exclusively only for the detaches. SQLSTATEs: MS005 a window under 1 day, an empty batch, or a bad setting; 55P03 the budget spent (the sessions holding the history named; nothing removed); 42501 for other roles.';
