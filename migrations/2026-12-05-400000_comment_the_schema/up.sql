-- What each table, column and function a user touches is for, in the
-- database itself: `\d+ machines` and `\df+ machine_state_transition` in psql
-- say it, and `diesel print-schema` (diesel.toml, `with_docs`) copies the
-- tables' and columns' comments into src/schema.rs as docs.
--
-- The tables may be a legacy system's (adopted by migration 000001), with
-- comments of their own, and earlier migrations commented a few objects
-- (`machine_state_transitions.verb`, 2026-12-05-100000): every comment this
-- migration replaces is kept in `machine_state_private.earlier_comments`,
-- and down.sql puts it back.
-- The invariants I1–I6 are those of ARCHITECTURE.md.

CREATE TABLE machine_state_private.earlier_comments (
    classoid regclass NOT NULL,   -- pg_class (a table or its column) or pg_proc
    objoid oid NOT NULL,
    objsubid integer NOT NULL,    -- the column's number; 0 for the table itself
    description text NOT NULL,
    PRIMARY KEY (classoid, objoid, objsubid)
);
REVOKE ALL ON machine_state_private.earlier_comments FROM PUBLIC;
COMMENT ON TABLE machine_state_private.earlier_comments IS
'The comments that migration 2026-12-05-400000 replaced (a legacy system''s on the tables it owned, and earlier migrations''); its down.sql puts them back.';

INSERT INTO machine_state_private.earlier_comments (classoid, objoid, objsubid, description)
SELECT d.classoid, d.objoid, d.objsubid, d.description
FROM pg_catalog.pg_description d
WHERE (d.classoid = 'pg_catalog.pg_class'::regclass
       AND d.objoid IN ('machines'::regclass, 'machine_state'::regclass,
                        'machine_state_transitions'::regclass))
   OR (d.classoid = 'pg_catalog.pg_proc'::regclass
       AND d.objoid IN (
           SELECT p.oid FROM pg_catalog.pg_proc p
           WHERE (p.pronamespace = current_schema()::regnamespace
                  AND (p.proname LIKE 'machine\_state\_%' OR p.proname LIKE 'atomic\_%'))
              OR p.pronamespace = 'machine_state_private'::regnamespace));

----------------------------------------------------------------------------
-- machines
COMMENT ON TABLE machines IS
'One row per machine (deposition tool): its state as the dashboards and the legacy services read it.

Its twin is the machine''s `machine_state` row, and the two never disagree: same state (I1), same process id (I2), the same time of the last transition (I5). Every transition writes both rows in one transaction and appends a `machine_state_transitions` entry (the crate''s write path, or `machine_state_transition()`); once `machine_state_enforce_invariants()` has run, a deferred trigger refuses at COMMIT any transaction that leaves the pair disagreeing (MS007). A legacy table keeps its own further columns. Roles granted through `machine_state_grant_application` read it and change it only through the SQL functions.';
COMMENT ON COLUMN machines.id IS
'The machine''s id; `machine_state.machine_id` and `machine_state_transitions.machine_id` refer to it.';
COMMENT ON COLUMN machines.status IS
'The machine''s state: `offline`, `idle`, `processing` or `error`; always equal to `machine_state.current_state` (I1).';
COMMENT ON COLUMN machines.current_process_id IS
'The recipe run (`process_executions.id`) the machine is running: set exactly while `status` is `processing` (I3), always equal to `machine_state.process_id` (I2), and on one machine at a time (unique index `machines_current_process_id_key`).';
COMMENT ON COLUMN machines.created_at IS
'When the machine was registered.';
COMMENT ON COLUMN machines.updated_at IS
'When the machine last changed state: equal to `machine_state.state_since` and to its latest `machine_state_transitions.transitioned_at` (I5).';

----------------------------------------------------------------------------
-- machine_state
COMMENT ON TABLE machine_state IS
'The other half of a machine''s state, one row per `machines` row: the state with its process id, failure mode and timestamps.

Written only together with its `machines` row, which it must always agree with (I1–I5, see `machines`); `machine_state_pair_violations(machines, machine_state)` says what a pair breaks.';
COMMENT ON COLUMN machine_state.machine_id IS
'The machine (`machines.id`): one `machine_state` row per machine.';
COMMENT ON COLUMN machine_state.current_state IS
'The machine''s state: `offline`, `idle`, `processing` or `error`; always equal to `machines.status` (I1).';
COMMENT ON COLUMN machine_state.state_since IS
'When the machine entered `current_state`: equal to `machines.updated_at` and to its latest `machine_state_transitions.transitioned_at` (I5).';
COMMENT ON COLUMN machine_state.process_id IS
'The recipe run the machine is running: set exactly in `processing` (I3), always equal to `machines.current_process_id` (I2).';
COMMENT ON COLUMN machine_state.is_failure_mode IS
'True exactly in `error` (I4).';
COMMENT ON COLUMN machine_state.failure_component IS
'The failed component, as the legacy executor recorded it; every transition and repair clears it.';
COMMENT ON COLUMN machine_state.failure_description IS
'What went wrong: set in `error` (I4: not blank, at most 4096 characters), NULL in every other state.';
COMMENT ON COLUMN machine_state.updated_at IS
'When this row was last written (a transition or a repair).';
COMMENT ON COLUMN machine_state.history_head IS
'The operation id of the machine''s latest `machine_state_transitions` entry, where its chain ends (I6); kept by the trigger `machine_state_transitions_link`, for every writer.';

----------------------------------------------------------------------------
-- machine_state_transitions
COMMENT ON TABLE machine_state_transitions IS
'The history: one entry per transition, registration and repair, appended in the same transaction as the two rows it describes and never updated.

A machine''s entries form one unbroken chain, each `from_state` the previous `to_state`, and the latest holds its current state (I6). The client''s `operation_id` is unique, so an operation whose COMMIT outcome was lost is resolved by looking it up, and a retry applies at most once. Partitioned by `operation_id`, one partition per UTC day of UUIDv7 ids (`machine_state_transitions_pYYYYMMDD`: `machine_state_prepare_history` creates them ahead, `machine_state_prune_history` drops them behind) and `machine_state_transitions_default` for every other id; pruning keeps each machine''s latest entry. Each entry names the machine''s previous one (`previous_operation_id`), and `machine_state.history_head` its latest.';
COMMENT ON COLUMN machine_state_transitions.id IS
'The order in which the entries were written.';
COMMENT ON COLUMN machine_state_transitions.machine_id IS
'The machine (`machines.id`).';
COMMENT ON COLUMN machine_state_transitions.from_state IS
'The state before: the previous entry''s `to_state` (I6); NULL only on the entry that registers the machine (`kind` `create`).';
COMMENT ON COLUMN machine_state_transitions.to_state IS
'The state after; the latest entry''s is the machine''s current state (I6).';
COMMENT ON COLUMN machine_state_transitions.process_id IS
'The recipe run the transition started (to `processing`) or ended (from `processing`); NULL otherwise.';
COMMENT ON COLUMN machine_state_transitions.description IS
'The failure description of a transition to `error`; a repair''s account of what it changed.';
COMMENT ON COLUMN machine_state_transitions.operation_id IS
'The operation''s id, chosen by the client (UUIDv7 by default), unique: an operation whose outcome was lost is looked up by it, a retry with it applies at most once, and reusing it for another transition is refused (MS006).';
COMMENT ON COLUMN machine_state_transitions.kind IS
'`create` (the machine registered), `transition` or `repair` (the audit''s repair, which brought a diverged pair back).';
COMMENT ON COLUMN machine_state_transitions.transitioned_at IS
'The time of the transaction that wrote it: the two rows'' `machines.updated_at` and `machine_state.state_since` (I5).';
COMMENT ON COLUMN machine_state_transitions.isolation_level IS
'`transaction_isolation` when it was written: `repeatable read` for the crate''s write path; the SQL functions, which lock the rows instead, record their caller''s level (`read committed` through PostgREST).';
COMMENT ON COLUMN machine_state_transitions.verb IS
'The transition recorded: `start`, `complete`, `stop`, `fail`, `reset`, `bring_online`, `take_offline`, `create` or `repair`; NULL on entries written before migration 2026-12-05-100000.';
COMMENT ON COLUMN machine_state_transitions.previous_operation_id IS
'The operation id of the machine''s previous entry, whose `to_state` is this one''s `from_state` (I6); NULL on its first entry and on entries written before migration 2026-12-05-300000. Set by the trigger `machine_state_transitions_link`.';

----------------------------------------------------------------------------
-- The transitions, for callers that are not the crate's Rust write path.
COMMENT ON FUNCTION machine_state_transition(uuid, text, text, uuid, text, uuid, text) IS
'Moves machine `p_machine_id` from `p_from` to `p_to` (verb `p_verb`, by default the one the transition table gives), writing both rows and appending the history entry in one statement: the SQL twin of the crate''s write path. Compare-and-set on `p_from` and, leaving `processing`, on the run `p_process_id`; `p_operation_id` (default: a new UUIDv7) makes a retry apply at most once. Returns the history entry. Called by the crate''s `WritePath::SqlFunction`, by the `atomic_*` functions and by services granted through `machine_state_grant_application`. SQLSTATEs: MS001 illegal transition, MS002 the state or run moved, MS003 no such machine, MS004 the two rows already disagree, MS005 invalid input, MS006 operation id used for another transition, 55P03 lock timeout (5 s), 40001/40P01 passed through for a retry, 42501 not granted.';
COMMENT ON FUNCTION machine_state_transition_result(machine_state_transitions) IS
'The JSON the legacy RPCs return for a history entry: the shipped keys (`success`, `machine`, `machine_state`, `updated_at`) and the transition''s (`machine_id`, `previous_state`, `new_state`, `verb`, `process_id`, `operation_id`, `transitioned_at`, `isolation_level`). Called by the `atomic_*` functions.';
COMMENT ON FUNCTION atomic_update_machine_state(uuid, text, uuid, text, uuid, boolean, text) IS
'Legacy RPC (the Python wrappers, through Supabase''s PostgREST, with these parameter names): moves the machine to `p_machine_status` from the state it finds under the row lock, through `machine_state_transition`, with the verb the transition table gives; `p_machine_state_current_state` defaults to `p_machine_status`, a NULL `p_failure_description` keeps the stored one. Returns the shipped JSON. SQLSTATEs: MS005 when the halves disagree (states, process ids, failure mode) or the input is invalid, MS003 no such machine, and those of `machine_state_transition` (MS001, MS002, 55P03, 40001).';
COMMENT ON FUNCTION atomic_processing_machine_state(uuid, uuid) IS
'Legacy RPC of the recipe starter: starts run `p_process_id` on the machine from the state found under the row lock (`offline` or `idle`), through `machine_state_transition` (verb `start`); returns the shipped JSON. SQLSTATEs: those of `machine_state_transition` (MS001 not startable, MS003, MS005, 55P03, 40001).';
COMMENT ON FUNCTION atomic_complete_machine_state(uuid) IS
'Legacy RPC of the recipe executor: the running recipe finished (`processing -> idle`, verb `complete`), decided under the row lock, through `machine_state_transition`; returns the shipped JSON. SQLSTATEs: those of `machine_state_transition` (MS001 not processing, MS003, 55P03, 40001).';
COMMENT ON FUNCTION atomic_error_machine_state(uuid, text) IS
'Legacy RPC of the recipe executor: the running recipe failed (`processing -> error`, verb `fail`), with the description `Recipe execution error: <p_error_message>`, decided under the row lock, through `machine_state_transition`; returns the shipped JSON. SQLSTATEs: MS005 blank or NULL message (or over 4096 characters with the prefix), and those of `machine_state_transition` (MS001, MS003, 55P03, 40001).';
COMMENT ON FUNCTION atomic_stop_machine_state(uuid, uuid) IS
'Legacy RPC of the recipe stopper (a user abort): `processing -> idle`, verb `stop`, decided under the row lock, through `machine_state_transition`; with `p_process_id`, only if the machine runs that run. Returns the shipped JSON. SQLSTATEs: MS002 the machine runs another run or none, and those of `machine_state_transition` (MS001, MS003, 55P03, 40001).';

----------------------------------------------------------------------------
-- The pair invariant.
COMMENT ON FUNCTION machine_state_pair_violations(machines, machine_state) IS
'What a machine''s pair of rows breaks (I1–I4, unknown states, a missing `machine_state` row), in words; empty when consistent. The SQL twin of the crate''s `Pair::violations` (a test keeps the two equal). Called by the enforcement trigger and `machine_state_enforce_invariants`; read-only, raises nothing.';
COMMENT ON FUNCTION machine_state_check_pairs(uuid[], text, text) IS
'Checks the pairs of the machines `p_touched` that the statement `p_operation` on `p_table` wrote, at COMMIT; raises MS007 naming the machine and what it breaks. Called by the trigger functions `machine_state_check_machines_pair` and `machine_state_check_machine_state_pair`.';
COMMENT ON FUNCTION machine_state_check_machines_pair() IS
'Trigger function of the deferred constraint trigger `machine_state_pair_invariant` on `machines` (enabled by `machine_state_enforce_invariants`): checks the written machine''s pair through `machine_state_check_pairs` (MS007).';
COMMENT ON FUNCTION machine_state_check_machine_state_pair() IS
'Trigger function of the deferred constraint trigger `machine_state_pair_invariant` on `machine_state` (enabled by `machine_state_enforce_invariants`): checks the written machine''s pair through `machine_state_check_pairs` (MS007).';
COMMENT ON FUNCTION machine_state_enforce_invariants() IS
'Turns enforcement on: from then on PostgreSQL refuses, at COMMIT, any transaction that leaves a machine''s pair inconsistent (MS007). Run once by the migration owner, after the audit shows 0% diverged. SQLSTATEs: MS008 while any pair is diverged (counts them, names one) or inside a REPEATABLE READ transaction; 42501 for other roles.';
COMMENT ON FUNCTION machine_state_relax_invariants() IS
'Turns enforcement off (the triggers disabled); run by the migration owner. SQLSTATE 42501 for other roles.';
COMMENT ON FUNCTION machine_state_invariants_enforced() IS
'Whether enforcement is on (both triggers enabled). Read by `machine-state doctor` and `watch` (the gauge `machine_state_invariants_enforced`).';

----------------------------------------------------------------------------
-- The history's chain and partitions.
COMMENT ON FUNCTION machine_state_transitions_link() IS
'Trigger function of `machine_state_transitions_link` (BEFORE INSERT on `machine_state_transitions`, whoever writes): links the entry to the machine''s previous one (`previous_operation_id`) and makes it `machine_state.history_head`, under the `machine_state` row''s lock. Raises nothing of its own.';
COMMENT ON FUNCTION machine_state_prepare_history(integer, timestamptz) IS
'Creates the history''s missing daily partitions (`machine_state_transitions_pYYYYMMDD`) from `p_from`''s UTC day to `p_days_ahead` days after it, each with no privileges of its own and the read policy; returns their names. Run daily by the migration owner (`machine-state prune-history`, which prepares the coming days; `machine_state::history::prepare_history`). SQLSTATEs: MS005 `p_days_ahead` outside 0–366; 42501 for other roles.';
COMMENT ON FUNCTION machine_state_prune_history(interval, integer) IS
'Removes the history entries older than `p_older_than` (at least 1 day) but each machine''s latest, so every chain still ends in the current state (I6): whole daily partitions are detached and dropped, the rest deleted in batches of `p_batch`; returns how many entries were removed. Run by the migration owner (`machine-state prune-history`, `machine_state::history::prune_history`). SQLSTATEs: MS005 a window under 1 day or an empty batch; 42501 for other roles.';

----------------------------------------------------------------------------
-- Roles.
COMMENT ON FUNCTION machine_state_grant_application(regrole) IS
'Grants an application role what it needs and nothing more: USAGE on the schema, SELECT on the three tables, EXECUTE on `machine_state_transition` and the `atomic_*` functions; records it in `machine_state_private.application_grants`, returns each statement, and warns if the role can still write the tables through grants made elsewhere. Run by the migration owner (`machine-state grant`, sql/roles.sql). SQLSTATEs: MS005 no role given; 42501 for other roles.';
COMMENT ON FUNCTION machine_state_revoke_application(regrole) IS
'Takes back exactly what `machine_state_grant_application` granted the role, and returns each statement. Run by the migration owner (`machine-state revoke`). SQLSTATE 42501 for other roles.';

----------------------------------------------------------------------------
-- Bookkeeping.
COMMENT ON FUNCTION machine_state_private.uuid_v7() IS
'A new time-ordered UUID (version 7), as the crate makes them: the default operation id of `machine_state_transition`, so the history''s unique index is appended to.';
COMMENT ON FUNCTION machine_state_private.uuid_v7_bound(timestamptz) IS
'The smallest UUIDv7 of the millisecond `p_at`: the bound of a daily partition of the history (`machine_state_prepare_history`, `machine_state_prune_history`).';
