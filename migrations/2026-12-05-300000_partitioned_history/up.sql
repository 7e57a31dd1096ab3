-- A history whose cost per transition does not depend on its size or on how
-- recently a machine moved, and whose retention drops whole partitions.
--
-- * `machine_state_transitions` becomes a table partitioned by RANGE
--   (operation_id), one partition per UTC day of UUIDv7 ids (their leading 48
--   bits are the time in milliseconds), so `UNIQUE (operation_id)` stays
--   global: at most once holds for every id the history still holds.
-- * The table as it was (every row, index, grant and policy) becomes the
--   DEFAULT partition `machine_state_transitions_default`, attached without a
--   rewrite: it keeps the rows written before this migration, and receives
--   every id outside the daily partitions (random v4 ids, a clock far off).
-- * No per-machine index on the daily partitions: the index on `(machine_id,
--   id)` put each machine's newest entry on a leaf of its own once the history
--   was long, and the first change of a page after a checkpoint is logged
--   whole. Instead each entry names the machine's previous one
--   (`previous_operation_id`) and `machine_state.history_head` names the
--   latest: a BEFORE INSERT trigger keeps both, for every writer. A
--   transition then writes the heap's and the two indexes' last pages, which
--   every machine shares.
-- * `machine_state_prepare_history(days)` creates the daily partitions ahead,
--   `machine_state_prune_history(older_than)` detaches and drops the ones
--   wholly older than the window, keeping each machine's latest entry.
--
-- The row type changes with the table: the functions whose signature names
-- it are dropped and created again from their own definitions, with their
-- owner, grants and comment (so a column added to the history before this
-- migration, and the functions' bodies, are carried as they are).

-- 1. The functions whose arguments or result are the history's row type.
CREATE TEMPORARY TABLE machine_state_history_functions ON COMMIT DROP AS
SELECT p.oid::regprocedure::text AS signature, pg_get_functiondef(p.oid) AS definition,
       p.proowner, coalesce(p.proacl, acldefault('f', p.proowner)) AS acl,
       obj_description(p.oid, 'pg_proc') AS comment
FROM pg_proc p
WHERE p.prorettype = 'machine_state_transitions'::regtype
   OR 'machine_state_transitions'::regtype = ANY (p.proargtypes::oid[]);

DO $$
DECLARE
    f record;
BEGIN
    -- machine_state_transition_result(...) first: nothing depends on it
    FOR f IN SELECT signature FROM machine_state_history_functions ORDER BY signature DESC LOOP
        EXECUTE format('DROP FUNCTION %s', f.signature);
    END LOOP;
END
$$;

-- 2. The table as it was becomes the default partition.
ALTER TABLE machine_state_transitions RENAME TO machine_state_transitions_default;
ALTER TABLE machine_state_transitions_default
    RENAME CONSTRAINT machine_state_transitions_operation_id_key
    TO machine_state_transitions_default_operation_id_key;
ALTER TABLE machine_state_transitions_default ADD COLUMN previous_operation_id uuid;
COMMENT ON COLUMN machine_state_transitions_default.previous_operation_id IS
    'the operation id of the machine''s previous entry (NULL on its first, and on entries written before migration 2026-12-05-300000)';
-- A partitioned table cannot have an identity column (PostgreSQL < 17): the
-- parent draws ids from a sequence of its own, which continues this one.
CREATE TEMPORARY TABLE machine_state_history_last_id ON COMMIT DROP AS
SELECT (SELECT max(id) FROM machine_state_transitions_default) AS last_id;
ALTER TABLE machine_state_transitions_default ALTER COLUMN id DROP IDENTITY;

CREATE TABLE machine_state_transitions (
    LIKE machine_state_transitions_default INCLUDING DEFAULTS INCLUDING COMMENTS,
    CONSTRAINT machine_state_transitions_operation_id_key UNIQUE (operation_id),
    CONSTRAINT machine_state_transitions_machine_id_fkey
        FOREIGN KEY (machine_id) REFERENCES machines (id) ON DELETE CASCADE
) PARTITION BY RANGE (operation_id);
CREATE SEQUENCE machine_state_transitions_id_seq OWNED BY machine_state_transitions.id;
SELECT setval('machine_state_transitions_id_seq', coalesce(last_id, 1), last_id IS NOT NULL)
FROM machine_state_history_last_id;
ALTER TABLE machine_state_transitions
    ALTER COLUMN id SET DEFAULT nextval('machine_state_transitions_id_seq');
COMMENT ON TABLE machine_state_transitions IS
    'the transition history, partitioned by operation id (one partition per UTC day of UUIDv7 ids, machine_state_prepare_history); each entry names the machine''s previous one';

-- Attached without a scan of its rows: its unique index and foreign key match
-- the parent's, and no other partition exists yet.
ALTER TABLE machine_state_transitions ATTACH PARTITION machine_state_transitions_default DEFAULT;

-- Grants, row level security and policies of the parent: those of the table.
DO $$
DECLARE
    v_old regclass := 'machine_state_transitions_default';
    v_new regclass := 'machine_state_transitions';
    v_owner oid := (SELECT relowner FROM pg_class WHERE oid = v_new);
    g record;
    pol record;
BEGIN
    -- what default privileges granted the new table, taken back
    FOR g IN SELECT DISTINCT a.grantee
             FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
             WHERE c.oid = v_new AND a.grantee <> v_owner LOOP
        EXECUTE format('REVOKE ALL ON %s FROM %s', v_new,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END);
    END LOOP;
    FOR g IN SELECT a.grantee, a.privilege_type, a.is_grantable
             FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
             WHERE c.oid = v_old AND a.grantee <> v_owner LOOP
        EXECUTE format('GRANT %s ON %s TO %s%s', g.privilege_type, v_new,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END,
                       CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    FOR g IN SELECT DISTINCT a.grantee
             FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('S', c.relowner))) a
             WHERE c.oid = 'machine_state_transitions_id_seq'::regclass AND a.grantee <> v_owner LOOP
        EXECUTE format('REVOKE ALL ON SEQUENCE machine_state_transitions_id_seq FROM %s',
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END);
    END LOOP;
    IF (SELECT relrowsecurity FROM pg_class WHERE oid = v_old) THEN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', v_new);
    END IF;
    FOR pol IN SELECT * FROM pg_policies
               WHERE schemaname = current_schema() AND tablename = 'machine_state_transitions_default' LOOP
        EXECUTE format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s', pol.policyname, v_new,
                       pol.permissive, pol.cmd,
                       (SELECT string_agg(CASE WHEN r = 'public' THEN 'PUBLIC' ELSE quote_ident(r) END, ', ')
                        FROM unnest(pol.roles) r),
                       CASE WHEN pol.qual IS NOT NULL THEN format(' USING (%s)', pol.qual) ELSE '' END,
                       CASE WHEN pol.with_check IS NOT NULL THEN format(' WITH CHECK (%s)', pol.with_check) ELSE '' END);
        EXECUTE format('COMMENT ON POLICY %I ON %s IS %L', pol.policyname, v_new,
                       (SELECT obj_description(p.oid, 'pg_policy') FROM pg_policy p
                        WHERE p.polrelid = v_old AND p.polname = pol.policyname));
    END LOOP;
END
$$;

-- 3. The chain: each machine's latest entry, and each entry's previous one.
ALTER TABLE machine_state ADD COLUMN history_head uuid;
COMMENT ON COLUMN machine_state.history_head IS
    'the operation id of the machine''s latest history entry (kept by machine_state_transitions_link)';
UPDATE machine_state s
SET history_head = (SELECT t.operation_id FROM machine_state_transitions_default t
                    WHERE t.machine_id = s.machine_id ORDER BY t.id DESC LIMIT 1);

CREATE FUNCTION machine_state_transitions_link() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_head uuid;
BEGIN
    SELECT history_head INTO v_head FROM machine_state
    WHERE machine_id = NEW.machine_id FOR UPDATE;
    -- No state row (a repair writes it first; a legacy writer may not): the
    -- entry starts a chain. An entry that is already the head is one the
    -- retention moves, links and all.
    IF NOT FOUND OR v_head IS NOT DISTINCT FROM NEW.operation_id THEN
        RETURN NEW;
    END IF;
    NEW.previous_operation_id := v_head;
    UPDATE machine_state SET history_head = NEW.operation_id WHERE machine_id = NEW.machine_id;
    RETURN NEW;
END
$fn$;
COMMENT ON FUNCTION machine_state_transitions_link() IS
    'BEFORE INSERT on machine_state_transitions: links the entry to the machine''s previous one and makes it machine_state.history_head';
CREATE TRIGGER machine_state_transitions_link BEFORE INSERT ON machine_state_transitions
    FOR EACH ROW EXECUTE FUNCTION machine_state_transitions_link();

-- 4. The daily partitions: created ahead, dropped behind.
CREATE FUNCTION machine_state_prepare_history(p_days_ahead integer DEFAULT 7,
                                              p_from timestamptz DEFAULT now())
RETURNS SETOF text
LANGUAGE plpgsql
AS $fn$
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
$fn$;
COMMENT ON FUNCTION machine_state_prepare_history(integer, timestamptz) IS
    'creates the history''s daily partitions from p_from''s UTC day to p_days_ahead days after it (those missing); returns their names';

CREATE FUNCTION machine_state_prune_history(p_older_than interval, p_batch integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql
AS $fn$
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
$fn$;
COMMENT ON FUNCTION machine_state_prune_history(interval, integer) IS
    'removes the history entries older than p_older_than (at least 1 day) but each machine''s latest: whole daily partitions are dropped; returns how many entries were removed';

-- The smallest UUIDv7 of a millisecond: a partition bound.
CREATE FUNCTION machine_state_private.uuid_v7_bound(p_at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT (lpad(to_hex(floor(extract(epoch FROM p_at) * 1000)::bigint), 12, '0')
            || '00000000000000000000')::uuid
$fn$;
REVOKE EXECUTE ON FUNCTION machine_state_private.uuid_v7_bound(timestamptz) FROM PUBLIC;

DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'machine_state_transitions_link()',
        'machine_state_prepare_history(integer, timestamptz)',
        'machine_state_prune_history(interval, integer)'
    ]::regprocedure[]
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', f, current_schema());
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;

-- 5. The functions of step 1, again, on the new row type.
DO $$
DECLARE
    f record;
    g record;
    v_new regprocedure;
BEGIN
    FOR f IN SELECT * FROM machine_state_history_functions ORDER BY signature LOOP
        EXECUTE f.definition;
        v_new := f.signature::regprocedure;
        IF (SELECT proowner FROM pg_proc WHERE oid = v_new) <> f.proowner THEN
            EXECUTE format('ALTER FUNCTION %s OWNER TO %I', v_new, f.proowner::regrole);
        END IF;
        FOR g IN SELECT DISTINCT a.grantee
                 FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                 WHERE p.oid = v_new AND a.grantee <> p.proowner LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', v_new,
                           CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END);
        END LOOP;
        FOR g IN SELECT a.grantee, a.is_grantable FROM aclexplode(f.acl) a
                 WHERE a.grantee <> f.proowner LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s%s', v_new,
                           CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END,
                           CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
        EXECUTE format('COMMENT ON FUNCTION %s IS %L', v_new, f.comment);
    END LOOP;
END
$$;

-- machine_state_grant_application grants SELECT on the three tables it finds
-- as ordinary tables (relkind 'r'): the history is now a partitioned one
-- ('p'), and its default partition is read by name (`history`, the entries
-- written before the partitioning: its index on (machine_id, id)), so the
-- role reads it too; the daily partitions are read through the parent only.
-- Its definition, with those two tests widened (CREATE OR REPLACE keeps its
-- owner, grants and comment).
DO $$
DECLARE
    v_definition text := pg_get_functiondef('machine_state_grant_application(regrole)'::regprocedure);
BEGIN
    IF strpos(v_definition, $q$c.relkind = 'r'$q$) = 0
       OR strpos(v_definition, $q$'machine_state_transitions',$q$) = 0 THEN
        RAISE EXCEPTION 'machine_state_grant_application no longer reads c.relkind = ''r'' and ''machine_state_transitions''';
    END IF;
    EXECUTE replace(replace(v_definition, $q$c.relkind = 'r'$q$, $q$c.relkind IN ('r', 'p')$q$),
                    $q$'machine_state_transitions',$q$,
                    $q$'machine_state_transitions', 'machine_state_transitions_default',$q$);
END
$$;
-- The roles granted the history through it hold SELECT on the table that is
-- now the default partition: recorded, so that revoking takes it back too.
INSERT INTO machine_state_private.application_grants
SELECT grantee, privilege, object_type, 'machine_state_transitions_default'
FROM machine_state_private.application_grants
WHERE object_type = 'TABLE' AND object = 'machine_state_transitions'
ON CONFLICT DO NOTHING;

-- 6. The next week's partitions, from tomorrow (UTC) on: today's entries, like
-- every entry of the table as it was, stay in the default partition, so no
-- row moves. Schedule `SELECT machine_state_prepare_history();` daily.
SELECT count(*) FROM machine_state_prepare_history(7, now() + interval '1 day');
