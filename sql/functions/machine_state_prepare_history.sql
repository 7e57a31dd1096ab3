-- The current definition of machine_state_prepare_history, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.machine_state_prepare_history(p_days_ahead integer DEFAULT 7, p_from timestamp with time zone DEFAULT now())
 RETURNS SETOF text
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
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
$function$;

COMMENT ON FUNCTION public.machine_state_prepare_history(p_days_ahead integer, p_from timestamp with time zone) IS 'Creates the history''s missing daily partitions (`machine_state_transitions_pYYYYMMDD`) from `p_from`''s UTC day to `p_days_ahead` days after it, each with no privileges of its own and the read policy; returns their names. Run daily by the migration owner (`machine-state prune-history`, which prepares the coming days; `machine_state::history::prepare_history`). Every lock wait is limited to `machine_state.ddl_lock_timeout` (default 500 ms) and retried until `machine_state.ddl_budget` (default 60 s) is spent. SQLSTATEs: MS005 `p_days_ahead` outside 0–366; 55P03 the budget spent (the sessions holding the history named; nothing created); 42501 for other roles.';
