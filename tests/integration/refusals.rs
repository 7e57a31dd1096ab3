//! Transitions the database refuses: stale, concurrent, unknown, invalid.
//! Each is a typed error that hands the machine back and changes nothing.

use diesel::connection::SimpleConnection;
use diesel::{Connection, RunQueryDsl};
use machine_state::{AnyMachine, Error, Machine, Offline, Status};
use uuid::Uuid;

use crate::support::{TestDb, assert_consistent, snapshot};

#[test]
fn stale_complete_is_refused_and_changes_nothing() {
    let db = TestDb::new();
    let (mut a, mut b) = (db.conn(), db.conn());
    let run = Uuid::new_v4();
    let id = Machine::<Offline>::create(&mut a, Uuid::new_v4())
        .unwrap()
        .start(&mut a, run)
        .unwrap()
        .id();
    // Both executors load the processing machine; A completes first.
    let AnyMachine::Processing(on_a) = AnyMachine::load(&mut a, id).unwrap() else {
        panic!()
    };
    let AnyMachine::Processing(on_b) = AnyMachine::load(&mut b, id).unwrap() else {
        panic!()
    };
    on_a.complete(&mut a).unwrap();
    let before = snapshot(&mut b);

    let refused = on_b.complete(&mut b).unwrap_err();
    match &refused.error {
        Error::Conflict {
            machine_id,
            expected,
            found,
        } => {
            assert_eq!(*machine_id, id);
            assert_eq!(
                *expected,
                Status::new(machine_state::State::Processing, Some(run))
            );
            assert_eq!(*found, Status::new(machine_state::State::Idle, None));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        refused.machine.process_id(),
        run,
        "the machine is handed back"
    );
    assert_eq!(snapshot(&mut b), before);
    assert_consistent(&mut b, id);
}

#[test]
fn late_complete_of_an_old_run_cannot_close_a_newer_one() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let old_run = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .start(conn, Uuid::new_v4())
        .unwrap();
    let late = crate::support::load_as::<machine_state::Processing>(conn, old_run.id());
    let new_run = Uuid::new_v4();
    let current = old_run.stop(conn).unwrap().start(conn, new_run).unwrap();
    let before = snapshot(conn);

    let refused = late.complete(conn).unwrap_err();
    assert!(
        matches!(&refused.error, Error::Conflict { found, .. } if found.process_id == Some(new_run)),
        "{refused:?}"
    );
    assert_eq!(snapshot(conn), before);
    assert_eq!(
        AnyMachine::load(conn, current.id()).unwrap().process_id(),
        Some(new_run)
    );
}

#[test]
fn a_transition_that_lost_the_race_inside_a_snapshot_is_refused_and_changes_nothing() {
    // Deterministic interleaving of two connections:
    // B takes its snapshot, A commits a transition, then B writes.
    let db = TestDb::new();
    let (mut a, mut b) = (db.conn(), db.conn());
    let idle = Machine::<Offline>::create(&mut a, Uuid::new_v4())
        .unwrap()
        .bring_online(&mut a)
        .unwrap();
    let id = idle.id();
    let on_b = crate::support::load_as::<machine_state::Idle>(&mut a, id);

    let refused = b
        .build_transaction()
        .repeatable_read()
        .run(|b| {
            diesel::sql_query("SELECT 1 FROM machines").execute(b)?;
            idle.start(&mut a, Uuid::new_v4()).unwrap();
            Ok::<_, diesel::result::Error>(on_b.start(b, Uuid::new_v4()).unwrap_err())
        })
        .unwrap();
    assert!(
        matches!(refused.error, Error::RetriesExhausted { attempts: 1, .. }),
        "inside the caller's transaction a lost race cannot be retried: {refused:?}"
    );

    // Outside a transaction the same stale machine is refused as a conflict.
    let refused = refused.machine.start(&mut b, Uuid::new_v4()).unwrap_err();
    assert!(
        matches!(refused.error, Error::Conflict { .. }),
        "{refused:?}"
    );
    assert_consistent(&mut a, id);
    assert_eq!(
        machine_state::history::history(&mut a, id).unwrap().len(),
        3
    );
}

#[test]
fn a_transition_inside_a_read_committed_transaction_is_refused() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let offline = Machine::<Offline>::create(conn, Uuid::new_v4()).unwrap();
    let before = snapshot(conn);
    let result = conn.transaction(|conn| {
        let refused = offline.bring_online(conn).unwrap_err();
        Ok::<_, diesel::result::Error>(refused.error)
    });
    assert!(
        matches!(result, Ok(Error::NotRepeatableRead(ref level)) if level == "read committed"),
        "{result:?}"
    );
    assert_eq!(snapshot(conn), before);
}

#[test]
fn a_transition_inside_the_callers_repeatable_read_transaction_commits_with_it() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let offline = Machine::<Offline>::create(conn, Uuid::new_v4()).unwrap();
    let id = offline.id();
    let rolled_back: Result<(), Error> = conn.build_transaction().repeatable_read().run(|conn| {
        offline.bring_online(conn)?;
        Err(Error::InvalidInput("the caller changed its mind".into()))
    });
    assert!(rolled_back.is_err());
    assert_eq!(
        AnyMachine::load(conn, id).unwrap().state(),
        machine_state::State::Offline
    );

    conn.build_transaction()
        .repeatable_read()
        .run(|conn| {
            crate::support::load_as::<Offline>(conn, id)
                .bring_online(conn)
                .map_err(Error::from)
        })
        .unwrap();
    assert_eq!(
        AnyMachine::load(conn, id).unwrap().state(),
        machine_state::State::Idle
    );
    assert_consistent(conn, id);
}

#[test]
fn unknown_machine_is_not_found() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = Uuid::new_v4();
    assert!(matches!(AnyMachine::load(conn, id), Err(Error::NotFound(found)) if found == id));

    // A typed machine whose rows were deleted behind its back.
    let offline = Machine::<Offline>::create(conn, Uuid::new_v4()).unwrap();
    conn.batch_execute(&format!(
        "DELETE FROM machines WHERE id = '{}'",
        offline.id()
    ))
    .unwrap();
    let refused = offline.bring_online(conn).unwrap_err();
    assert!(matches!(refused.error, Error::NotFound(_)), "{refused:?}");
}

#[test]
fn registering_a_taken_id_is_refused() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .id();
    let before = snapshot(conn);
    assert!(matches!(
        Machine::<Offline>::create(conn, id),
        Err(Error::AlreadyExists(taken)) if taken == id
    ));
    assert_eq!(snapshot(conn), before);
}

#[test]
fn bad_failure_descriptions_are_refused_before_anything_is_written() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let mut processing = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .start(conn, Uuid::new_v4())
        .unwrap();
    let before = snapshot(conn);
    let huge = "x".repeat(10 * 1024 * 1024);
    for description in ["", "   ", "nul\0byte", huge.as_str()] {
        let refused = processing.fail(conn, description).unwrap_err();
        assert!(
            matches!(refused.error, Error::InvalidInput(_)),
            "{:?}",
            refused.error
        );
        processing = refused.machine;
    }
    assert_eq!(snapshot(conn), before);
    // Quotes and dollar signs are data, not SQL.
    let errored = processing.fail(conn, "it's $$ broken'; --").unwrap();
    assert_eq!(errored.description(), "it's $$ broken'; --");
    assert_consistent(conn, errored.id());
}
