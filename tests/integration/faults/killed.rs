//! A backend killed between the two table writes, and backends killed
//! under load: nothing is ever half-applied.

use std::collections::BTreeMap;
use std::sync::Mutex;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_query;
use diesel::sql_types::{Nullable, Uuid as SqlUuid};
use machine_state::{Action, Error, Idle, Machine, find_operation};
use uuid::Uuid;

use crate::support::harness::{
    Chaos, CrateWriter, HarnessDb, Outcome, Writer, describe, diverged, property, run_case,
    schedules,
};
use crate::support::legacy_writer::LegacyWriter;
use crate::support::{TestDb, assert_consistent, idle_machine, snapshot, violations};

use super::*;

/// `idle -> processing` on `conn` with the kill switch armed: the backend
/// dies between the writes; the outcome is unknown, nothing is written.
fn start_killed_between_writes(
    admin: &mut PgConnection,
    conn: &mut PgConnection,
    id: Uuid,
    operation_id: Uuid,
) -> Machine<Idle> {
    let idle = load_idle(conn, id);
    arm_kill(admin, id);
    let before = snapshot(admin);
    let refused = idle
        .with_operation_id(operation_id)
        .start(conn, Uuid::new_v4())
        .unwrap_err();
    match &refused.error {
        Error::OutcomeUnknown {
            operation_ids: reported,
            ..
        } => assert_eq!(*reported, [operation_id]),
        other => panic!("expected an unknown outcome, got: {}", describe(other)),
    }
    assert_eq!(snapshot(admin), before, "something was half-applied");
    assert_consistent(admin, id);
    assert_eq!(find_operation(admin, operation_id).unwrap(), None);
    disarm_kill(admin, id);
    refused.machine
}

#[test]
fn a_backend_killed_between_the_two_table_writes_leaves_nothing_half_applied() {
    let db = TestDb::new();
    let admin = &mut db.conn();
    admin.batch_execute(KILL_SWITCH).unwrap();

    // On the crate's pool (one autocommit statement), with a single
    // connection: the killed one must not be handed out again.
    let pool = machine_state::pool::pool_builder()
        .max_size(1)
        .build(machine_state::pool::Manager::new(&db.url).unwrap())
        .unwrap();
    let id = idle_machine(admin);
    let operation = Uuid::new_v4();
    let idle = start_killed_between_writes(admin, &mut pool.get().unwrap(), id, operation);
    let retried = idle
        .with_operation_id(operation)
        .start(&mut pool.get().unwrap(), Uuid::new_v4())
        .expect("the pool hands out a working connection, and the retry applies");
    assert_eq!(times_in_history(admin, id, operation), 1);
    retried.complete(&mut pool.get().unwrap()).unwrap();
    assert_consistent(admin, id);

    // On a plain connection (explicit REPEATABLE READ transaction).
    let id = idle_machine(admin);
    let operation = Uuid::new_v4();
    let idle = start_killed_between_writes(admin, &mut db.conn(), id, operation);
    idle.with_operation_id(operation)
        .start(&mut db.conn(), Uuid::new_v4())
        .unwrap();
    assert_eq!(times_in_history(admin, id, operation), 1);
    assert_consistent(admin, id);
    assert_no_leftovers(admin, &db);
}

#[test]
fn the_sql_function_killed_between_its_two_writes_leaves_nothing_half_applied() {
    let db = TestDb::new();
    let admin = &mut db.conn();
    admin.batch_execute(KILL_SWITCH).unwrap();
    let id = idle_machine(admin);
    arm_kill(admin, id);
    let before = snapshot(admin);
    let error = sql_query("SELECT 1 FROM machine_state_transition($1, 'idle', 'processing', $2)")
        .bind::<SqlUuid, _>(id)
        .bind::<Nullable<SqlUuid>, _>(Some(Uuid::new_v4()))
        .execute(&mut db.conn())
        .unwrap_err();
    assert!(
        matches!(
            error,
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _
            )
        ),
        "{error:?}"
    );
    assert_eq!(snapshot(admin), before);
    assert_consistent(admin, id);
    assert_no_leftovers(admin, &db);
}

#[test]
fn the_legacy_writer_killed_between_its_two_writes_diverges_the_tables() {
    // The control: the same fault does break the legacy pattern, so the two
    // tests above would notice a write path that is not atomic.
    let db = TestDb::new();
    let admin = &mut db.conn();
    admin.batch_execute(KILL_SWITCH).unwrap();
    let id = idle_machine(admin);
    arm_kill(admin, id);
    let conn = &mut db.conn();
    let view = LegacyWriter.load(conn, id).unwrap();
    let (outcome, _) =
        LegacyWriter.perform(conn, view, &Action::Start(Uuid::new_v4()), Uuid::new_v4());
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    assert_eq!(diverged(admin, &[id]), [id]);
    assert!(!violations(admin, id).is_empty());
}

#[test]
fn killing_backends_under_load_never_diverges_the_two_tables() {
    // Another session terminates random busy backends while the workers run:
    // some outcomes are unknown, each applied at most once, and the check
    // after every case holds.
    let db = HarnessDb::new();
    let writer = CrateWriter::default();
    let outcomes = Mutex::new(BTreeMap::new());
    property(
        "killing_backends_under_load_never_diverges_the_two_tables",
        16,
        schedules(),
        |schedule| {
            let report = run_case(&db, &writer, Chaos::KillBackends, &schedule);
            let mut outcomes = outcomes.lock().unwrap();
            for (outcome, n) in &report.outcomes {
                *outcomes.entry(outcome.clone()).or_insert(0) += n;
            }
            report.into_result()
        },
    );
    eprintln!(
        "killing backends under load: outcomes {:?}",
        outcomes.into_inner().unwrap()
    );
}
