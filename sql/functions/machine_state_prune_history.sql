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

COMMENT ON FUNCTION public.machine_state_prune_history(p_older_than interval, p_batch integer) IS 'Removes the history entries older than `p_older_than` (at least 1 day) but each machine''s latest, so every chain still ends in the current state (I6): whole daily partitions are detached and dropped, the rest deleted in batches of `p_batch`; returns how many entries were removed. Run by the migration owner (`machine-state prune-history`, `machine_state::history::prune_history`). SQLSTATEs: MS005 a window under 1 day or an empty batch; 42501 for other roles.';
