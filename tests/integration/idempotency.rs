//! Operation ids: a retried operation applies at most once.

use machine_state::history::history;
use machine_state::{Error, Machine, Offline, WritePath, find_operation};
use uuid::Uuid;

use crate::support::{TestDb, assert_consistent, snapshot};

#[test]
fn repeating_an_operation_id_reports_the_first_outcome_and_writes_nothing() {
    for path in [WritePath::Statement, WritePath::SqlFunction] {
        repeat_an_operation(path);
    }
}

fn repeat_an_operation(path: WritePath) {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let offline = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .with_write_path(path);
    let id = offline.id();
    let operation = Uuid::new_v4();

    let stale = crate::support::load_as::<Offline>(conn, id).with_write_path(path);
    let first = offline
        .with_operation_id(operation)
        .bring_online(conn)
        .unwrap();
    let offline = stale;
    let before = snapshot(conn);
    let again = offline
        .with_operation_id(operation)
        .bring_online(conn)
        .unwrap();
    assert_eq!(
        again.since(),
        first.since(),
        "the original outcome is reported"
    );
    assert_eq!(snapshot(conn), before, "and nothing is written");

    let entry = find_operation(conn, operation)
        .unwrap()
        .expect("the operation committed");
    assert_eq!(entry.machine_id, id);
    assert_eq!(entry.to_state, "idle");
    assert_eq!(history(conn, id).unwrap().len(), 2);
    assert_consistent(conn, id);
}

#[test]
fn an_operation_id_cannot_be_reused_for_another_transition() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let operation = Uuid::new_v4();
    let idle = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .with_operation_id(operation)
        .bring_online(conn)
        .unwrap();
    let before = snapshot(conn);
    let refused = idle
        .with_operation_id(operation)
        .take_offline(conn)
        .unwrap_err();
    assert!(matches!(refused.error, Error::OperationReused(op) if op == operation));
    assert_eq!(snapshot(conn), before);
}

#[test]
fn an_unknown_operation_id_is_not_found() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    assert_eq!(find_operation(conn, Uuid::new_v4()).unwrap(), None);
}

#[test]
fn an_operation_is_not_applied_again_when_the_machine_came_back_to_its_source_state() {
    // On a pool connection the transition first runs a statement that only
    // writes; the operation id's unique index must stop it from applying an
    // operation twice, even when the machine is back where it started.
    let db = TestDb::new();
    let pool = db.pool();
    let conn = &mut pool.get().unwrap();
    let offline = Machine::<Offline>::create(conn, Uuid::new_v4()).unwrap();
    let id = offline.id();
    let operation = Uuid::new_v4();
    let stale = crate::support::load_as::<Offline>(conn, id);
    let first = offline
        .with_operation_id(operation)
        .bring_online(conn)
        .unwrap();
    let offline = stale;
    first.take_offline(conn).unwrap();
    let before = snapshot(conn);

    let again = offline
        .with_operation_id(operation)
        .bring_online(conn)
        .unwrap();
    assert_eq!(
        find_operation(conn, operation)
            .unwrap()
            .unwrap()
            .transitioned_at,
        again.since(),
        "the original outcome is reported"
    );
    assert_eq!(snapshot(conn), before, "and nothing is written");
    assert_eq!(history(conn, id).unwrap().len(), 3);
    assert_consistent(conn, id);
}

#[test]
fn operation_ids_made_for_callers_are_time_ordered_in_rust_and_in_sql() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    // Rust: registration, a transition without an id of the caller's, and
    // `new_operation_id`; SQL: the function's default.
    let machine = Machine::<Offline>::create(conn, Uuid::new_v4()).unwrap();
    let id = machine.id();
    machine.bring_online(conn).unwrap();
    diesel::connection::SimpleConnection::batch_execute(
        conn,
        &format!("SELECT machine_state_transition('{id}', 'idle', 'offline')"),
    )
    .unwrap();
    let ids: Vec<Uuid> = history(conn, id)
        .unwrap()
        .iter()
        .map(|e| e.operation_id)
        .chain([machine_state::new_operation_id()])
        .collect();
    assert_eq!(ids.len(), 4);
    for pair in ids.windows(2) {
        assert_eq!(pair[0].get_version_num(), 7, "{ids:?}");
        assert!(pair[0] < pair[1], "not time-ordered: {ids:?}");
    }
    // A caller's own id of any version is still taken as it is.
    let own = Uuid::new_v4();
    let machine_state::AnyMachine::Offline(offline) =
        machine_state::AnyMachine::load(conn, id).unwrap()
    else {
        panic!("expected an offline machine");
    };
    offline.with_operation_id(own).bring_online(conn).unwrap();
    assert!(find_operation(conn, own).unwrap().is_some());
    assert_consistent(conn, id);
}

#[test]
fn a_stop_retried_under_a_completes_operation_id_is_refused_not_already_applied() {
    for path in [WritePath::Statement, WritePath::SqlFunction] {
        let db = TestDb::new();
        let pool = db.pool();
        let conn = &mut pool.get().unwrap();
        let processing = Machine::<Offline>::create(conn, Uuid::new_v4())
            .unwrap()
            .with_write_path(path)
            .start(conn, Uuid::new_v4())
            .unwrap();
        let id = processing.id();
        let operation = Uuid::new_v4();
        let [stale, again] = [(); 2].map(|()| {
            crate::support::load_as::<machine_state::Processing>(conn, id).with_write_path(path)
        });
        processing
            .with_operation_id(operation)
            .complete(conn)
            .unwrap();
        let before = snapshot(conn);

        // `processing -> idle` both: only the verb tells them apart.
        let refused = stale.with_operation_id(operation).stop(conn).unwrap_err();
        assert!(
            matches!(refused.error, Error::OperationReused(op) if op == operation),
            "{path:?}: {:?}",
            refused.error
        );
        assert_eq!(snapshot(conn), before, "{path:?}: nothing is written");
        // The same verb again is the same operation, already applied.
        again.with_operation_id(operation).complete(conn).unwrap();
        assert_eq!(snapshot(conn), before, "{path:?}");

        let entry = find_operation(conn, operation).unwrap().unwrap();
        assert_eq!(entry.verb.as_deref(), Some("complete"), "{path:?}");
        let verbs: Vec<Option<String>> = history(conn, id)
            .unwrap()
            .into_iter()
            .map(|entry| entry.verb)
            .collect();
        assert_eq!(
            verbs,
            [Some("create"), Some("start"), Some("complete")].map(|v| v.map(str::to_owned)),
            "{path:?}"
        );
        assert_consistent(conn, id);
    }
}
