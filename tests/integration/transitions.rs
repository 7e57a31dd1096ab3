//! Every legal transition, with I1–I6 checked after each.

use diesel::PgConnection;
use machine_state::history::history;
use machine_state::{AnyMachine, Machine, Offline, State, WritePath};
use uuid::Uuid;

use crate::support::{TestDb, assert_consistent};

/// Walk every edge of the transition table (`TRANSITIONS`, nine), checking after each step.
pub(crate) fn walk_every_edge(conn: &mut PgConnection, path: WritePath) -> Uuid {
    let offline = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .with_write_path(path);
    let id = offline.id();
    assert_consistent(conn, id);

    let idle = offline.bring_online(conn).unwrap(); // offline -> idle
    assert_consistent(conn, id);
    let offline = idle.take_offline(conn).unwrap(); // idle -> offline
    assert_consistent(conn, id);
    let first_run = Uuid::new_v4();
    let processing = offline.start(conn, first_run).unwrap(); // offline -> processing
    assert_eq!(processing.process_id(), first_run);
    assert_consistent(conn, id);
    let idle = processing.complete(conn).unwrap(); // processing -> idle
    assert_consistent(conn, id);
    let processing = idle.start(conn, Uuid::new_v4()).unwrap(); // idle -> processing
    assert_consistent(conn, id);
    let idle = processing.stop(conn).unwrap(); // processing -> idle (abort)
    assert_consistent(conn, id);
    let errored = idle
        .start(conn, Uuid::new_v4())
        .unwrap()
        .fail(conn, "chamber pressure out of range")
        .unwrap(); // processing -> error
    assert_eq!(errored.description(), "chamber pressure out of range");
    assert_consistent(conn, id);
    let idle = errored.reset(conn).unwrap(); // error -> idle
    assert_consistent(conn, id);
    let errored = idle
        .start(conn, Uuid::new_v4())
        .unwrap()
        .fail(conn, "heater fault")
        .unwrap();
    let offline = errored.take_offline(conn).unwrap(); // error -> offline
    assert_consistent(conn, id);
    assert_eq!(offline.state(), State::Offline);
    id
}

fn assert_history_is_repeatable_read(conn: &mut PgConnection, id: Uuid) {
    let entries = history(conn, id).unwrap();
    assert_eq!(entries.len(), 13, "one creation and 12 transitions");
    for entry in entries {
        assert_eq!(entry.isolation_level, "repeatable read", "{entry:?}");
    }
}

#[test]
fn every_legal_transition_keeps_both_rows_consistent_on_a_pool_connection() {
    let db = TestDb::new();
    let pool = db.pool();
    let conn = &mut pool.get().unwrap();
    let id = walk_every_edge(conn, WritePath::Statement);
    assert_history_is_repeatable_read(conn, id);
}

#[test]
fn every_legal_transition_keeps_both_rows_consistent_on_a_plain_connection() {
    // A plain session defaults to READ COMMITTED: the write path must notice
    // and run each transition in an explicit REPEATABLE READ transaction.
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = walk_every_edge(conn, WritePath::Statement);
    assert_history_is_repeatable_read(conn, id);
}

#[test]
fn every_legal_transition_through_the_sql_function_keeps_both_rows_consistent() {
    let db = TestDb::new();
    let pool = db.pool();
    let id = walk_every_edge(&mut pool.get().unwrap(), WritePath::SqlFunction);
    assert_history_is_repeatable_read(&mut pool.get().unwrap(), id);
    let conn = &mut db.conn();
    let id = walk_every_edge(conn, WritePath::SqlFunction);
    assert_history_is_repeatable_read(conn, id);
}

#[test]
fn a_loaded_machine_continues_where_the_typed_one_left_off() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let run = Uuid::new_v4();
    let processing = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .start(conn, run)
        .unwrap();
    let AnyMachine::Processing(loaded) = AnyMachine::load(conn, processing.id()).unwrap() else {
        panic!("expected a processing machine");
    };
    assert_eq!(loaded.process_id(), run);
    assert_eq!(loaded.since(), processing.since());
    loaded.complete(conn).unwrap();
    assert_consistent(conn, processing.id());
}

#[test]
fn machines_can_be_registered_idle() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let idle = Machine::<machine_state::Idle>::create(conn, Uuid::new_v4()).unwrap();
    assert_consistent(conn, idle.id());
    assert_eq!(
        AnyMachine::load(conn, idle.id()).unwrap().state(),
        State::Idle
    );
}
