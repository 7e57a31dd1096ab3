//! Loading rows into typed machines: a pair that is not consistent is a typed
//! error, never a guess.

use diesel::connection::SimpleConnection;
use machine_state::{Action, AnyMachine, Error};
use uuid::Uuid;

use crate::support::{TestDb, insert_raw_pair, snapshot};

#[test]
fn an_unknown_state_string_is_a_typed_error() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = Uuid::new_v4();
    insert_raw_pair(conn, id, "running", "running");
    match AnyMachine::load(conn, id) {
        Err(Error::UnknownState { machine_id, state }) => {
            assert_eq!(machine_id, id);
            assert_eq!(state, "running");
        }
        other => panic!("expected an unknown state, got {other:?}"),
    }
}

#[test]
fn a_diverged_pair_loads_as_inconsistent() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = Uuid::new_v4();
    insert_raw_pair(conn, id, "idle", "offline");
    match AnyMachine::load(conn, id) {
        Err(error) => {
            let message = error.to_string();
            let Error::Inconsistent {
                machine_id,
                machines,
                machine_state,
                violations,
            } = error
            else {
                panic!("expected inconsistent, got {error:?}");
            };
            assert_eq!(machine_id, id);
            assert_eq!(machines.state, machine_state::State::Idle);
            assert_eq!(
                machine_state.map(|s| s.state),
                Some(machine_state::State::Offline.into())
            );
            assert_eq!(violations, [machine_state::audit::Violation::StateMismatch]);
            assert!(
                message.contains("`machines` says `idle`, `machine_state` says `offline`"),
                "{message}"
            );
        }
        other => panic!("expected inconsistent, got {other:?}"),
    }
}

#[test]
fn processing_without_a_process_id_loads_as_inconsistent() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = Uuid::new_v4();
    insert_raw_pair(conn, id, "processing", "processing");
    assert!(matches!(
        AnyMachine::load(conn, id),
        Err(Error::Inconsistent { .. })
    ));
}

#[test]
fn a_machine_without_its_state_row_loads_as_inconsistent() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = Uuid::new_v4();
    conn.batch_execute(&format!(
        "INSERT INTO machines (id, status) VALUES ('{id}', 'idle')"
    ))
    .unwrap();
    assert!(matches!(
        AnyMachine::load(conn, id),
        Err(Error::Inconsistent { .. })
    ));
}

#[test]
fn an_illegal_runtime_action_is_refused_without_touching_the_database() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let machine = AnyMachine::Offline(
        machine_state::Machine::<machine_state::Offline>::create(conn, Uuid::new_v4()).unwrap(),
    );
    let before = snapshot(conn);
    let refused = machine.perform(conn, &Action::Complete).unwrap_err();
    assert!(matches!(refused.error, Error::IllegalTransition { .. }));
    assert_eq!(snapshot(conn), before);
    let idle = refused.machine.perform(conn, &Action::BringOnline).unwrap();
    assert_eq!(idle.state(), machine_state::State::Idle);
}

#[test]
fn a_database_without_the_migrations_says_so() {
    let db = TestDb::empty();
    let conn = &mut db.conn();
    assert!(matches!(
        AnyMachine::load(conn, Uuid::new_v4()),
        Err(Error::NotMigrated("machines"))
    ));
}
