//! The SQL-function write path refuses, reports and falls back like the
//! statement path.

use diesel::connection::SimpleConnection;
use machine_state::history::history;
use machine_state::{AnyMachine, Error, Machine, Offline, State, WritePath, telemetry};
use uuid::Uuid;

use crate::support::{TestDb, assert_consistent, snapshot};

#[test]
fn a_stale_complete_through_the_sql_function_is_a_typed_conflict() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let processing = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .with_write_path(WritePath::SqlFunction)
        .start(conn, Uuid::new_v4())
        .unwrap();
    let stale = crate::support::load_as::<machine_state::Processing>(conn, processing.id())
        .with_write_path(WritePath::SqlFunction);
    let newer = Uuid::new_v4();
    processing.stop(conn).unwrap().start(conn, newer).unwrap();
    let before = snapshot(conn);
    let refused = stale.complete(conn).unwrap_err();
    match refused.error {
        Error::Conflict { found, .. } => assert_eq!(found.process_id, Some(newer)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(snapshot(conn), before);
}

#[test]
fn an_unknown_machine_through_the_sql_function_is_not_found() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let offline = Machine::<Offline>::create(conn, Uuid::new_v4()).unwrap();
    conn.batch_execute(&format!(
        "DELETE FROM machines WHERE id = '{}'",
        offline.id()
    ))
    .unwrap();
    let refused = offline
        .with_write_path(WritePath::SqlFunction)
        .bring_online(conn)
        .unwrap_err();
    assert!(matches!(refused.error, Error::NotFound(_)), "{refused:?}");
}

#[test]
fn a_missing_sql_function_falls_back_to_the_atomic_statement_and_is_counted() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    conn.batch_execute(
        "DROP FUNCTION atomic_update_machine_state, atomic_complete_machine_state,
             atomic_error_machine_state, atomic_processing_machine_state;
         DROP FUNCTION machine_state_transition;",
    )
    .unwrap();
    let offline = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .with_write_path(WritePath::SqlFunction);
    let (idle, m) = crate::metrics::recorded(|| offline.bring_online(conn).unwrap());
    assert_eq!(m.counter(telemetry::FALLBACKS, &[]), 1, "fell back");
    assert_eq!(
        AnyMachine::load(conn, idle.id()).unwrap().state(),
        State::Idle
    );
    assert_consistent(conn, idle.id());
    assert_eq!(history(conn, idle.id()).unwrap().len(), 2);
}

/// Each statement file is its own query id (`src/sql_file.rs`): diesel
/// prepares it once per connection and reuses it. After `N` transitions on
/// one pooled connection (REPEATABLE READ by default: one autocommit
/// statement each), `applied.sql` is one prepared statement run `N` times.
#[test]
fn each_statement_file_is_prepared_once_per_connection_and_reused() {
    use diesel::prelude::*;
    use diesel::sql_types::BigInt;

    #[derive(QueryableByName)]
    struct Prepared {
        #[diesel(sql_type = BigInt)]
        runs: i64,
    }

    let db = TestDb::new();
    let id = crate::support::idle_machine(&mut db.conn());
    let pool = db.pool();
    let conn = &mut pool.get().unwrap();
    let mut machine = AnyMachine::load(conn, id).unwrap();
    const N: i64 = 10;
    let started = std::time::Instant::now();
    for n in 0..N {
        let action = if n % 2 == 0 {
            machine_state::Action::Start(Uuid::new_v4())
        } else {
            machine_state::Action::Complete
        };
        machine = machine.perform(conn, &action).unwrap();
    }
    eprintln!("{N} transitions on one connection: {:?}", started.elapsed());
    let prepared: Vec<Prepared> = diesel::sql_query(
        "SELECT generic_plans + custom_plans AS runs FROM pg_prepared_statements
         WHERE statement LIKE '-- A transition''s success path%'",
    )
    .load(conn)
    .unwrap();
    let runs: Vec<i64> = prepared.iter().map(|p| p.runs).collect();
    assert_eq!(runs, [N], "`applied.sql` prepared once, run {N} times");
}
