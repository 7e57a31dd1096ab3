-- Back to the functions as 2026-12-05-300000 and 2026-12-05-400000 left them:
-- the lock waits of prepare, prune, enforce and relax unlimited again, and the
-- helpers dropped.

CREATE OR REPLACE FUNCTION machine_state_prepare_history(p_days_ahead integer DEFAULT 7, p_from timestamp with time zone DEFAULT now())
 RETURNS SETOF text
 LANGUAGE plpgsql
AS $function$
DECLARE
    -- The history's schema (the pinned search_path starts with pg_catalog).
    v_schema name := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.oid = 'machine_state_transitions'::regclass);
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
    -- One at a time (a scheduled run and the command, say); neither reads
    -- nor writes of the history wait for it.
    LOCK TABLE machine_state_transitions IN SHARE UPDATE EXCLUSIVE MODE;
    FOR v_offset IN 0..p_days_ahead LOOP
        v_day := (p_from AT TIME ZONE 'UTC')::date + v_offset;
        v_name := 'machine_state_transitions_p' || to_char(v_day, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(format('%I.%I', v_schema, v_name)) IS NOT NULL;
        v_low := machine_state_private.uuid_v7_bound(v_day::timestamp AT TIME ZONE 'UTC');
        v_high := machine_state_private.uuid_v7_bound((v_day + 1)::timestamp AT TIME ZONE 'UTC');
        EXECUTE format('CREATE TABLE %I.%I (LIKE machine_state_transitions INCLUDING DEFAULTS)',
                       v_schema, v_name);
        v_table := format('%I.%I', v_schema, v_name)::regclass;
        -- Entries of that day already in the default partition (a random id
        -- that happens to fall in it) move to the new one, linked.
        EXECUTE format(
            'WITH moved AS (DELETE FROM machine_state_transitions_default
                            WHERE operation_id >= $1 AND operation_id < $2 RETURNING *)
             INSERT INTO %s SELECT * FROM moved', v_table)
        USING v_low, v_high;
        EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (id)', v_table);
        EXECUTE format('ALTER TABLE machine_state_transitions ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                       v_table, v_low, v_high);
        -- Read through the parent only: no privileges of its own (default
        -- privileges, as on Supabase, taken back), row level security on,
        -- with the parent's read policy (whoever could read it directly
        -- reads every row, as of the other tables; no policy allows a write).
        FOR g IN SELECT DISTINCT a.grantee
                 FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
                 WHERE c.oid = v_table AND a.grantee <> c.relowner LOOP
            EXECUTE format('REVOKE ALL ON %s FROM %s', v_table,
                           CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END);
        END LOOP;
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE format('CREATE POLICY machine_state_read ON %s FOR SELECT USING (true)', v_table);
        RETURN NEXT v_name;
    END LOOP;
END
$function$;

COMMENT ON FUNCTION machine_state_prepare_history(p_days_ahead integer, p_from timestamp with time zone) IS 'Creates the history''s missing daily partitions (`machine_state_transitions_pYYYYMMDD`) from `p_from`''s UTC day to `p_days_ahead` days after it, each with no privileges of its own and the read policy; returns their names. Run daily by the migration owner (`machine-state prune-history`, which prepares the coming days; `machine_state::history::prepare_history`). SQLSTATEs: MS005 `p_days_ahead` outside 0–366; 42501 for other roles.';

CREATE OR REPLACE FUNCTION machine_state_prune_history(p_older_than interval, p_batch integer DEFAULT 10000)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_cutoff timestamptz := now() - p_older_than;
    v_bound uuid := machine_state_private.uuid_v7_bound(now() - p_older_than);
    v_part record;
    v_kept bigint;
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
    -- Whole daily partitions wholly older than the window: detached (their
    -- range then falls to the default partition), each machine's latest entry
    -- among them put back (into the default), the rest dropped with the table.
    FOR v_part IN
        SELECT i.inhrelid::regclass AS part,
               (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::uuid AS high
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'machine_state_transitions'::regclass
          AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
        ORDER BY 2
    LOOP
        EXIT WHEN v_part.high > v_bound;
        EXECUTE format('ALTER TABLE machine_state_transitions DETACH PARTITION %s', v_part.part);
        -- found from the heads (one probe of the partition's unique index
        -- each), not by reading the partition
        EXECUTE format('INSERT INTO machine_state_transitions SELECT d.* FROM machine_state s
                        JOIN %s d ON d.operation_id = s.history_head', v_part.part);
        GET DIAGNOSTICS v_kept = ROW_COUNT;
        EXECUTE format('SELECT count(*) FROM %s', v_part.part) INTO v_count;
        EXECUTE format('DROP TABLE %s', v_part.part);
        v_removed := v_removed + v_count - v_kept;
    END LOOP;
    -- The default partition (entries from before the partitioning, and ids
    -- outside the daily ranges): deleted row by row, in batches, but never a
    -- machine's latest entry.
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
    RETURN v_removed;
END
$function$;

COMMENT ON FUNCTION machine_state_prune_history(p_older_than interval, p_batch integer) IS 'Removes the history entries older than `p_older_than` (at least 1 day) but each machine''s latest, so every chain still ends in the current state (I6): whole daily partitions are detached and dropped, the rest deleted in batches of `p_batch`; returns how many entries were removed. Run by the migration owner (`machine-state prune-history`, `machine_state::history::prune_history`). SQLSTATEs: MS005 a window under 1 day or an empty batch; 42501 for other roles.';

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
    LOCK TABLE machines, machine_state IN SHARE ROW EXCLUSIVE MODE;
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

COMMENT ON FUNCTION machine_state_enforce_invariants() IS 'Turns enforcement on: from then on PostgreSQL refuses, at COMMIT, any transaction that leaves a machine''s pair inconsistent (MS007). Run once by the migration owner, after the audit shows 0% diverged. SQLSTATEs: MS008 while any pair is diverged (counts them, names one) or inside a REPEATABLE READ transaction; 42501 for other roles.';

CREATE OR REPLACE FUNCTION machine_state_relax_invariants()
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    ALTER TABLE machines DISABLE TRIGGER machine_state_pair_invariant;
    ALTER TABLE machine_state DISABLE TRIGGER machine_state_pair_invariant;
END
$function$;

COMMENT ON FUNCTION machine_state_relax_invariants() IS 'Turns enforcement off (the triggers disabled); run by the migration owner. SQLSTATE 42501 for other roles.';

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

DROP FUNCTION machine_state_private.lock_pair_tables(text);
DROP FUNCTION machine_state_private.ddl_patience();
DROP FUNCTION machine_state_private.lock_retry(integer, timestamptz, interval, interval, regclass[], text);
