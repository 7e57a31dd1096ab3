-- The current definition of machine_state_enforce_invariants, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.machine_state_enforce_invariants()
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
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

COMMENT ON FUNCTION public.machine_state_enforce_invariants() IS 'Turns enforcement on: from then on PostgreSQL refuses, at COMMIT, any transaction that leaves a machine''s pair inconsistent (MS007). Run once by the migration owner, after the audit shows 0% diverged. Waits for the tables'' locks at most `machine_state.ddl_lock_timeout` (default 500 ms) at a time, retried until `machine_state.ddl_budget` (default 60 s) is spent. SQLSTATEs: MS008 while any pair is diverged (counts them, names one) or inside a REPEATABLE READ transaction; 55P03 the budget spent (the sessions holding the tables named; nothing changed); 42501 for other roles.';
