//! Retention of the history (`prune_history`): old entries go, each
//! machine's latest stays (I6 holds), and at most once still holds for every
//! operation younger than the window.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use machine_state::history::{MIN_RETENTION, history, prune_history};
use machine_state::{AnyMachine, Error, Idle, Machine, find_operation};
use uuid::Uuid;

use crate::support::{TestDb, assert_consistent, snapshot};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Move every history entry of `machine` back by `days` (the rows' times
/// with them, so I5 holds).
fn age(conn: &mut diesel::PgConnection, machine: Uuid, days: u32) {
    conn.batch_execute(&format!(
        "UPDATE machine_state_transitions
             SET transitioned_at = transitioned_at - interval '{days} days'
             WHERE machine_id = '{machine}';
         UPDATE machines SET updated_at = updated_at - interval '{days} days'
             WHERE id = '{machine}';
         UPDATE machine_state SET state_since = state_since - interval '{days} days',
                                  updated_at = updated_at - interval '{days} days'
             WHERE machine_id = '{machine}';"
    ))
    .unwrap();
}

#[test]
fn pruning_deletes_old_entries_but_each_machines_latest_and_keeps_every_chain_whole() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let old = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap();
    let old_id = old.id();
    let mut machine = old;
    for _ in 0..5 {
        machine = machine
            .start(conn, Uuid::new_v4())
            .unwrap()
            .complete(conn)
            .unwrap();
    }
    assert_eq!(history(conn, old_id).unwrap().len(), 11);
    age(conn, old_id, 100);

    // A machine whose whole history is young, and one that is old but moved
    // since: its new entries stay.
    let young = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap();
    let young_id = young.id();
    young.take_offline(conn).unwrap();
    let recent_operation = Uuid::new_v4();
    let AnyMachine::Idle(machine) = AnyMachine::load(conn, old_id).unwrap() else {
        panic!("expected an idle machine");
    };
    machine
        .with_operation_id(recent_operation)
        .start(conn, Uuid::new_v4())
        .unwrap();

    // In batches of 3: several statements.
    let deleted = prune_history(conn, 90 * DAY, 3).unwrap();
    assert_eq!(
        deleted, 11,
        "all 11 old entries: the machine's latest is young"
    );
    let kept = history(conn, old_id).unwrap();
    assert_eq!(kept.len(), 1, "{kept:#?}");
    assert_eq!(kept[0].operation_id, recent_operation);
    assert_eq!(history(conn, young_id).unwrap().len(), 2);
    assert_consistent(conn, old_id);
    assert_consistent(conn, young_id);

    // Nothing more to prune.
    assert_eq!(prune_history(conn, 90 * DAY, 3).unwrap(), 0);
}

#[test]
fn a_machine_whose_history_is_all_old_keeps_its_latest_entry() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let machine = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap();
    let id = machine.id();
    machine.take_offline(conn).unwrap();
    age(conn, id, 400);
    assert_eq!(prune_history(conn, 30 * DAY, 1000).unwrap(), 1);
    let kept = history(conn, id).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].to_state, "offline");
    assert_consistent(conn, id);
}

#[test]
fn at_most_once_holds_for_operations_inside_the_window() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let machine = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap();
    let id = machine.id();
    let operation = Uuid::new_v4();
    let run = Uuid::new_v4();
    let stale = crate::support::load_as::<Idle>(conn, id);
    let running = machine
        .with_operation_id(operation)
        .start(conn, run)
        .unwrap();
    running.complete(conn).unwrap();
    age(conn, id, 10);
    prune_history(conn, 30 * DAY, 1000).unwrap();

    // The start is 10 days old, inside the 30-day window: a retry of it
    // (the stale typed machine, the same operation id) reports the original
    // outcome and writes nothing.
    assert!(find_operation(conn, operation).unwrap().is_some());
    let before = snapshot(conn);
    let again = stale.with_operation_id(operation).start(conn, run).unwrap();
    assert_eq!(again.process_id(), run);
    assert_eq!(snapshot(conn), before);
}

#[test]
fn a_window_shorter_than_a_day_or_an_empty_batch_is_refused_and_deletes_nothing() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap().id();
    age(conn, id, 5);
    let before = snapshot(conn);
    for (window, batch) in [(MIN_RETENTION - Duration::from_secs(1), 10), (DAY, 0)] {
        match prune_history(conn, window, batch) {
            Err(Error::InvalidInput(reason)) => assert!(!reason.is_empty()),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(snapshot(conn), before);
}

#[test]
fn prune_history_as_a_command() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let machine = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap();
    let id = machine.id();
    machine.take_offline(conn).unwrap();
    age(conn, id, 100);
    let out = assert_cmd::Command::cargo_bin("machine-state")
        .unwrap()
        .args([
            "--database-url",
            &db.url,
            "prune-history",
            "--older-than",
            "90days",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("deleted 1 history entries"),
        "{out:?}"
    );
    let refused = assert_cmd::Command::cargo_bin("machine-state")
        .unwrap()
        .args([
            "--database-url",
            &db.url,
            "prune-history",
            "--older-than",
            "1h",
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
}
