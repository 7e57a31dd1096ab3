// @generated automatically by Diesel CLI.

diesel::table! {
    /// The other half of a machine's state, one row per `machines` row: the state with its process id, failure mode and timestamps.
    ///
    /// Written only together with its `machines` row, which it must always agree with (I1–I5, see `machines`); `machine_state_pair_violations(machines, machine_state)` says what a pair breaks.
    machine_state (machine_id) {
        /// The machine (`machines.id`): one `machine_state` row per machine.
        machine_id -> Uuid,
        /// The machine's state: `offline`, `idle`, `processing` or `error`; always equal to `machines.status` (I1).
        current_state -> Text,
        /// When the machine entered `current_state`: equal to `machines.updated_at` and to its latest `machine_state_transitions.transitioned_at` (I5).
        state_since -> Timestamptz,
        /// The recipe run the machine is running: set exactly in `processing` (I3), always equal to `machines.current_process_id` (I2).
        process_id -> Nullable<Uuid>,
        /// True exactly in `error` (I4).
        is_failure_mode -> Bool,
        /// The failed component, as the legacy executor recorded it; every transition and repair clears it.
        failure_component -> Nullable<Text>,
        /// What went wrong: set in `error` (I4: not blank, at most 4096 characters), NULL in every other state.
        failure_description -> Nullable<Text>,
        /// When this row was last written (a transition or a repair).
        updated_at -> Timestamptz,
        /// The operation id of the machine's latest `machine_state_transitions` entry, where its chain ends (I6); kept by the trigger `machine_state_transitions_link`, for every writer.
        history_head -> Nullable<Uuid>,
    }
}

diesel::table! {
    /// The history: one entry per transition, registration and repair, appended in the same transaction as the two rows it describes and never updated.
    ///
    /// A machine's entries form one unbroken chain, each `from_state` the previous `to_state`, and the latest holds its current state (I6). The client's `operation_id` is unique, so an operation whose COMMIT outcome was lost is resolved by looking it up, and a retry applies at most once. Partitioned by `operation_id`, one partition per UTC day of UUIDv7 ids (`machine_state_transitions_pYYYYMMDD`: `machine_state_prepare_history` creates them ahead, `machine_state_prune_history` drops them behind) and `machine_state_transitions_default` for every other id; pruning keeps each machine's latest entry. Each entry names the machine's previous one (`previous_operation_id`), and `machine_state.history_head` its latest.
    machine_state_transitions (id) {
        /// The order in which the entries were written.
        id -> Int8,
        /// The machine (`machines.id`).
        machine_id -> Uuid,
        /// The state before: the previous entry's `to_state` (I6); NULL only on the entry that registers the machine (`kind` `create`).
        from_state -> Nullable<Text>,
        /// The state after; the latest entry's is the machine's current state (I6).
        to_state -> Text,
        /// The recipe run the transition started (to `processing`) or ended (from `processing`); NULL otherwise.
        process_id -> Nullable<Uuid>,
        /// The failure description of a transition to `error`; a repair's account of what it changed.
        description -> Nullable<Text>,
        /// The operation's id, chosen by the client (UUIDv7 by default), unique: an operation whose outcome was lost is looked up by it, a retry with it applies at most once, and reusing it for another transition is refused (MS006).
        operation_id -> Uuid,
        /// `create` (the machine registered), `transition` or `repair` (the audit's repair, which brought a diverged pair back).
        kind -> Text,
        /// The time of the transaction that wrote it: the two rows' `machines.updated_at` and `machine_state.state_since` (I5).
        transitioned_at -> Timestamptz,
        /// `transaction_isolation` when it was written: `repeatable read` for the crate's write path; the SQL functions, which lock the rows instead, record their caller's level (`read committed` through PostgREST).
        isolation_level -> Text,
        /// The transition recorded: `start`, `complete`, `stop`, `fail`, `reset`, `bring_online`, `take_offline`, `create` or `repair`; NULL on entries written before migration 2026-12-05-100000.
        verb -> Nullable<Text>,
        /// The operation id of the machine's previous entry, whose `to_state` is this one's `from_state` (I6); NULL on its first entry and on entries written before migration 2026-12-05-300000. Set by the trigger `machine_state_transitions_link`.
        previous_operation_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    /// One row per machine (deposition tool): its state as the dashboards and the legacy services read it.
    ///
    /// Its twin is the machine's `machine_state` row, and the two never disagree: same state (I1), same process id (I2), the same time of the last transition (I5). Every transition writes both rows in one transaction and appends a `machine_state_transitions` entry (the crate's write path, or `machine_state_transition()`); once `machine_state_enforce_invariants()` has run, a deferred trigger refuses at COMMIT any transaction that leaves the pair disagreeing (MS007). A legacy table keeps its own further columns. Roles granted through `machine_state_grant_application` read it and change it only through the SQL functions.
    machines (id) {
        /// The machine's id; `machine_state.machine_id` and `machine_state_transitions.machine_id` refer to it.
        id -> Uuid,
        /// The machine's state: `offline`, `idle`, `processing` or `error`; always equal to `machine_state.current_state` (I1).
        status -> Text,
        /// The recipe run (`process_executions.id`) the machine is running: set exactly while `status` is `processing` (I3), always equal to `machine_state.process_id` (I2), and on one machine at a time (unique index `machines_current_process_id_key`).
        current_process_id -> Nullable<Uuid>,
        /// When the machine was registered.
        created_at -> Timestamptz,
        /// When the machine last changed state: equal to `machine_state.state_since` and to its latest `machine_state_transitions.transitioned_at` (I5).
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(machine_state -> machines (machine_id));
diesel::joinable!(machine_state_transitions -> machines (machine_id));

diesel::allow_tables_to_appear_in_same_query!(machine_state, machine_state_transitions, machines,);
