-- Retention and enforcement that never freeze the writers.
--
-- `machine_state_prune_history` detaches the old daily partitions: an ACCESS
-- EXCLUSIVE lock on the history, which waited behind any session holding the
-- history open (a report's long read, an operator's `psql` left in a
-- transaction), while every transition queued behind the waiting detach, for
-- as long as that session stayed open; and, once granted, the lock was held
-- through the rest of the run (counting the dropped rows, the default
-- partition's batched deletes). `machine_state_prepare_history`'s ATTACH
-- waited the same way for the default partition, and
-- `machine_state_enforce_invariants`'s LOCK of `machines` and
-- `machine_state` (and `machine_state_relax_invariants`'s ALTER TABLE) for
-- any writer in a transaction.
--
-- Now each takes its locks the way `machine-state migrate` does: every wait
-- for a lock is limited (`machine_state.ddl_lock_timeout`, default 500 ms);
-- a wait that times out (or a deadlock) rolls back the attempt (a
-- subtransaction: its locks are released, the queue behind it moves on), and
-- after a jittered pause the attempt is made again, until the budget
-- (`machine_state.ddl_budget`, default 60 s) is spent: then the call fails
-- with SQLSTATE 55P03 naming the sessions that held the history, and nothing
-- of it is applied. The detaches come last, after everything that reads or
-- deletes many rows, so the exclusive lock is held for catalog changes and
-- at most one entry per machine. Signatures, owners and grants of the four
-- functions do not change.

-- Between two attempts of a guarded step: pause (jittered, growing, at most
-- 5 s, leaving room for one more full wait), or give up when the budget
-- cannot hold another wait.
CREATE FUNCTION machine_state_private.lock_retry(
    p_attempt integer, p_started timestamptz, p_budget interval,
    p_lock_timeout interval, p_tables regclass[], p_what text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
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
$fn$;
COMMENT ON FUNCTION machine_state_private.lock_retry(integer, timestamptz, interval, interval, regclass[], text) IS
    'Between two attempts of a step whose lock wait timed out (`machine_state_prepare_history`, `machine_state_prune_history`, `machine_state_private.lock_pair_tables`): pauses (jittered, growing, at most 5 s), or raises 55P03 naming the sessions holding `p_tables` (or their partitions) once the budget cannot hold another wait.';

-- The patience asked for: `machine_state.ddl_lock_timeout` (default 500 ms)
-- and `machine_state.ddl_budget` (default 60 s), checked, and the lock
-- timeout as `lock_timeout` takes it (whole milliseconds, at least one: 0
-- would mean no limit).
CREATE FUNCTION machine_state_private.ddl_patience(
    OUT lock_timeout interval, OUT budget interval, OUT setting text)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    lock_timeout := coalesce(nullif(current_setting('machine_state.ddl_lock_timeout', true), ''),
                             '500ms')::interval;
    budget := coalesce(nullif(current_setting('machine_state.ddl_budget', true), ''), '60s')::interval;
    IF lock_timeout <= interval '0' OR budget < interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = format('machine_state.ddl_lock_timeout must be positive and machine_state.ddl_budget not negative, got %s and %s',
                             lock_timeout, budget);
    END IF;
    setting := greatest(1, ceil(extract(epoch FROM lock_timeout) * 1000))::bigint || 'ms';
END
$fn$;
COMMENT ON FUNCTION machine_state_private.ddl_patience() IS
    'The lock timeout and budget of the DDL that runs while the machines do (prepare, prune, enforce, relax): `machine_state.ddl_lock_timeout` (default 500 ms) and `machine_state.ddl_budget` (default 60 s), and the lock timeout as a `lock_timeout` setting. SQLSTATE MS005 for a lock timeout not positive or a negative budget.';

-- `machines` and `machine_state` locked against writes (SHARE ROW
-- EXCLUSIVE, held to the end of the caller's transaction), as patiently as
-- `ddl_patience` says: what turning the pair's triggers on or off needs.
CREATE FUNCTION machine_state_private.lock_pair_tables(p_what text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_lock_timeout interval;
    v_budget interval;
    v_setting text;
    v_caller_lock_timeout text := current_setting('lock_timeout');
    v_started timestamptz := clock_timestamp();
    v_attempt integer := 0;
BEGIN
    SELECT * INTO v_lock_timeout, v_budget, v_setting FROM machine_state_private.ddl_patience();
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', v_setting, true);
            LOCK TABLE machines, machine_state IN SHARE ROW EXCLUSIVE MODE;
            PERFORM set_config('lock_timeout', v_caller_lock_timeout, true);
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            v_attempt := v_attempt + 1;
            PERFORM machine_state_private.lock_retry(
                v_attempt, v_started, v_budget, v_lock_timeout,
                ARRAY['machines'::regclass, 'machine_state'::regclass], p_what);
        END;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION machine_state_private.lock_pair_tables(text) IS
    'Locks `machines` and `machine_state` in SHARE ROW EXCLUSIVE mode for the caller''s transaction (`machine_state_enforce_invariants`, `machine_state_relax_invariants`), each wait limited and retried as `machine_state_private.ddl_patience` says; `p_what` names the caller in the 55P03 raised when the budget is spent.';

-- Pinned `search_path` (lock_pair_tables names the tables), and EXECUTE for
-- the owner alone.
DO $$
DECLARE
    f regprocedure;
    item record;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'machine_state_private.lock_retry(integer, timestamptz, interval, interval, regclass[], text)',
        'machine_state_private.ddl_patience()',
        'machine_state_private.lock_pair_tables(text)'
    ]::regprocedure[]
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        FOR item IN
            SELECT a.grantee::regrole AS grantee FROM pg_proc p
            CROSS JOIN LATERAL aclexplode(p.proacl) a
            WHERE p.oid = f AND a.grantee <> p.proowner AND a.grantee <> 0
        LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', f, item.grantee);
        END LOOP;
    END LOOP;
    EXECUTE format('ALTER FUNCTION machine_state_private.lock_pair_tables(text) SET search_path = pg_catalog, %I, pg_temp',
                   current_schema());
END
$$;

CREATE OR REPLACE FUNCTION machine_state_prepare_history(p_days_ahead integer DEFAULT 7,
                                                         p_from timestamptz DEFAULT now())
RETURNS SETOF text
LANGUAGE plpgsql
AS $fn$
DECLARE
    -- The history's schema (the pinned search_path starts with pg_catalog).
    v_schema name := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.oid = 'machine_state_transitions'::regclass);
    v_lock_timeout interval;
    v_budget interval;
    v_setting text;
    v_caller_lock_timeout text := current_setting('lock_timeout');
    v_started timestamptz := clock_timestamp();
    v_attempt integer := 0;
    v_created text[];
    v_day date;
    v_low uuid;
    v_high uuid;
    v_name text;
    v_table regclass;
    g record;
BEGIN
    IF p_days_ahead IS NULL OR p_days_ahead < 0 OR p_days_ahead > 366 THEN
        RAISE EXCEPTION USING ERRCODE = 'MS005',
            MESSAGE = format('days ahead must be between 0 and 366, got %s', coalesce(p_days_ahead::text, 'NULL'));
    END IF;
    SELECT * INTO v_lock_timeout, v_budget, v_setting FROM machine_state_private.ddl_patience();
    LOOP
        BEGIN
            -- Every lock wait of the attempt limited; the setting, like the
            -- locks, goes with the subtransaction when it fails.
            PERFORM set_config('lock_timeout', v_setting, true);
            v_created := ARRAY[]::text[];
            -- One at a time (a scheduled run and the command, say); neither
            -- reads nor writes of the history wait for it.
            LOCK TABLE ONLY machine_state_transitions IN SHARE UPDATE EXCLUSIVE MODE;
            FOR v_offset IN 0..p_days_ahead LOOP
                v_day := (p_from AT TIME ZONE 'UTC')::date + v_offset;
                v_name := 'machine_state_transitions_p' || to_char(v_day, 'YYYYMMDD');
                CONTINUE WHEN to_regclass(format('%I.%I', v_schema, v_name)) IS NOT NULL;
                v_low := machine_state_private.uuid_v7_bound(v_day::timestamp AT TIME ZONE 'UTC');
                v_high := machine_state_private.uuid_v7_bound((v_day + 1)::timestamp AT TIME ZONE 'UTC');
                EXECUTE format('CREATE TABLE %I.%I (LIKE machine_state_transitions INCLUDING DEFAULTS)',
                               v_schema, v_name);
                v_table := format('%I.%I', v_schema, v_name)::regclass;
                -- Entries of that day already in the default partition (a
                -- random id that happens to fall in it, or today's before
                -- today's partition) move to the new one, linked; the
                -- default partition held from here (the attach below would
                -- hold it anyway), so that no such entry lands in it between
                -- the move and the attach's check.
                LOCK TABLE machine_state_transitions_default IN ACCESS EXCLUSIVE MODE;
                EXECUTE format(
                    'WITH moved AS (DELETE FROM machine_state_transitions_default
                                    WHERE operation_id >= $1 AND operation_id < $2 RETURNING *)
                     INSERT INTO %s SELECT * FROM moved', v_table)
                USING v_low, v_high;
                EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (id)', v_table);
                -- SHARE UPDATE EXCLUSIVE on the history (held), ACCESS
                -- EXCLUSIVE on the default partition while it is checked
                -- for entries of the new range: writes and reads of the
                -- default partition wait for that, nothing else.
                EXECUTE format('ALTER TABLE machine_state_transitions ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                               v_table, v_low, v_high);
                -- Read through the parent only: no privileges of its own
                -- (default privileges, as on Supabase, taken back), row level
                -- security on, with the parent's read policy (whoever could
                -- read it directly reads every row, as of the other tables;
                -- no policy allows a write).
                FOR g IN SELECT DISTINCT a.grantee
                         FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
                         WHERE c.oid = v_table AND a.grantee <> c.relowner LOOP
                    EXECUTE format('REVOKE ALL ON %s FROM %s', v_table,
                                   CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END);
                END LOOP;
                EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', v_table);
                EXECUTE format('CREATE POLICY machine_state_read ON %s FOR SELECT USING (true)', v_table);
                v_created := v_created || v_name;
            END LOOP;
            PERFORM set_config('lock_timeout', v_caller_lock_timeout, true);
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            v_attempt := v_attempt + 1;
            PERFORM machine_state_private.lock_retry(
                v_attempt, v_started, v_budget, v_lock_timeout,
                ARRAY['machine_state_transitions'::regclass], 'preparing the history''s partitions');
        END;
    END LOOP;
    RETURN QUERY SELECT unnest(v_created);
END
$fn$;
COMMENT ON FUNCTION machine_state_prepare_history(integer, timestamptz) IS 'Creates the history''s missing daily partitions (`machine_state_transitions_pYYYYMMDD`) from `p_from`''s UTC day to `p_days_ahead` days after it, each with no privileges of its own and the read policy; returns their names. Run daily by the migration owner (`machine-state prune-history`, which prepares the coming days; `machine_state::history::prepare_history`). Every lock wait is limited to `machine_state.ddl_lock_timeout` (default 500 ms) and retried until `machine_state.ddl_budget` (default 60 s) is spent. SQLSTATEs: MS005 `p_days_ahead` outside 0–366; 55P03 the budget spent (the sessions holding the history named; nothing created); 42501 for other roles.';

CREATE OR REPLACE FUNCTION machine_state_prune_history(p_older_than interval, p_batch integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql
AS $fn$
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
$fn$;
COMMENT ON FUNCTION machine_state_prune_history(interval, integer) IS 'Removes the history entries older than `p_older_than` (at least 1 day) but each machine''s latest, so every chain still ends in the current state (I6): whole daily partitions are detached and dropped, the rest deleted in batches of `p_batch`; returns how many entries were removed. Run by the migration owner (`machine-state prune-history`, `machine_state::history::prune_history`). Every lock wait is limited to `machine_state.ddl_lock_timeout` (default 500 ms) and retried until `machine_state.ddl_budget` (default 60 s) is spent; the history is held exclusively only for the detaches. SQLSTATEs: MS005 a window under 1 day, an empty batch, or a bad setting; 55P03 the budget spent (the sessions holding the history named; nothing removed); 42501 for other roles.';

CREATE OR REPLACE FUNCTION machine_state_enforce_invariants()
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    diverged bigint;
    total bigint;
    example text;
BEGIN
    -- The check below must see every committed write, and nothing may diverge
    -- between it and the triggers going on. The lock (which every INSERT,
    -- UPDATE and DELETE conflicts with) waits for writers in flight and holds
    -- new ones off until this transaction ends; in READ COMMITTED, the query
    -- after it takes a fresh snapshot. A REPEATABLE READ snapshot could be
    -- older than the lock, so that is refused.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'MS008',
            MESSAGE = format('cannot enforce the pair invariants in a %s transaction',
                             current_setting('transaction_isolation')),
            HINT = 'call it in autocommit or a READ COMMITTED transaction';
    END IF;
    -- Waiting for the lock (behind a legacy writer stalled between its two
    -- writes, say) would queue every writer behind this call: each wait is
    -- limited to machine_state.ddl_lock_timeout (default 500 ms) and tried
    -- again until machine_state.ddl_budget (default 60 s) is spent.
    PERFORM machine_state_private.lock_pair_tables('enforcing the pair invariants');
    SELECT count(*) FILTER (WHERE cardinality(v.broken) > 0),
           count(*),
           min(format('machine `%s`: %s', m.id, array_to_string(v.broken, '; ')))
               FILTER (WHERE cardinality(v.broken) > 0)
    INTO diverged, total, example
    FROM machines m
    LEFT JOIN machine_state s ON s.machine_id = m.id
    CROSS JOIN LATERAL (SELECT machine_state_pair_violations(m, s) AS broken) v;
    IF diverged > 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'MS008',
            MESSAGE = format('cannot enforce the pair invariants: %s of %s machines are diverged',
                             diverged, total),
            DETAIL = format('for example %s', example),
            HINT = 'run `machine-state repair` (or `machine_state::repair`) until the audit shows 0%, then try again';
    END IF;
    ALTER TABLE machines ENABLE TRIGGER machine_state_pair_invariant;
    ALTER TABLE machine_state ENABLE TRIGGER machine_state_pair_invariant;
END
$function$;

COMMENT ON FUNCTION machine_state_enforce_invariants() IS 'Turns enforcement on: from then on PostgreSQL refuses, at COMMIT, any transaction that leaves a machine''s pair inconsistent (MS007). Run once by the migration owner, after the audit shows 0% diverged. Waits for the tables'' locks at most `machine_state.ddl_lock_timeout` (default 500 ms) at a time, retried until `machine_state.ddl_budget` (default 60 s) is spent. SQLSTATEs: MS008 while any pair is diverged (counts them, names one) or inside a REPEATABLE READ transaction; 55P03 the budget spent (the sessions holding the tables named; nothing changed); 42501 for other roles.';

CREATE OR REPLACE FUNCTION machine_state_relax_invariants()
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    -- Disabling a trigger locks its table against writes: waited for as in
    -- machine_state_enforce_invariants.
    PERFORM machine_state_private.lock_pair_tables('relaxing the pair invariants');
    ALTER TABLE machines DISABLE TRIGGER machine_state_pair_invariant;
    ALTER TABLE machine_state DISABLE TRIGGER machine_state_pair_invariant;
END
$fn$;
COMMENT ON FUNCTION machine_state_relax_invariants() IS 'Turns enforcement off (the triggers disabled); run by the migration owner. Waits for the tables'' locks at most `machine_state.ddl_lock_timeout` (default 500 ms) at a time, retried until `machine_state.ddl_budget` (default 60 s) is spent. SQLSTATEs: 55P03 the budget spent (the sessions holding the tables named; nothing changed); 42501 for other roles.';

-- CREATE OR REPLACE keeps owner and grants, not the settings.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'machine_state_prepare_history(integer, timestamptz)',
        'machine_state_prune_history(interval, integer)',
        'machine_state_enforce_invariants()',
        'machine_state_relax_invariants()'
    ]::regprocedure[]
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', f, current_schema());
    END LOOP;
END
$$;
