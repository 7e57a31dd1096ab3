//! The same behaviour on a server that speaks German (`lc_messages =
//! 'de_DE.UTF-8'`): the deadlock victim is retried, the lock timeout is the
//! typed refusal naming the holder (exit code 1 from the command), a missing
//! SQL function falls back to the Rust transaction, and a database without
//! the migrations says so. Every decision reads the error's SQLSTATE; these
//! tests fail when one reads the English message instead.

use diesel::connection::SimpleConnection;
use machine_state::history::history;
use machine_state::{Error, Machine, Offline, RetryPolicy, WritePath, telemetry};
use uuid::Uuid;

use crate::adoption::LEGACY_FIXTURE;
use crate::faults::forced::{Race, assert_retries_exhausted, forced_on};
use crate::stalls::{command_line_gives_up_after_its_lock_timeout, refused_behind_stalled_holders};
use crate::support::TestDb;
use crate::support::language::assert_speaks_german;

#[test]
fn a_deadlock_victim_is_retried_on_a_german_server() {
    forced_on(
        TestDb::new().in_german(),
        Race::Deadlock,
        RetryPolicy::default(),
    )
    .unwrap();
}

#[test]
fn a_deadlock_without_retries_is_a_lost_race_in_german_words() {
    // Proof that the server spoke German to the transition itself: the
    // deadlock it gave up on is worded "Verklemmung".
    let result = forced_on(
        TestDb::new().in_german(),
        Race::Deadlock,
        RetryPolicy::never(),
    );
    assert_retries_exhausted(result, "Verklemmung");
}

#[test]
fn a_transition_behind_a_stalled_lock_holder_is_refused_naming_it_on_a_german_server() {
    refused_behind_stalled_holders(
        &TestDb::new().in_german(),
        &[("machines", true), ("machine_state", false)],
    );
}

#[test]
fn the_command_line_gives_up_with_exit_code_1_on_a_german_server() {
    command_line_gives_up_after_its_lock_timeout(TestDb::new().in_german());
}

#[test]
fn a_missing_sql_function_falls_back_on_a_german_server() {
    let db = TestDb::new().in_german();
    let conn = &mut db.conn();
    assert_speaks_german(conn);
    conn.batch_execute("DROP FUNCTION machine_state_transition")
        .unwrap();
    let offline = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .with_write_path(WritePath::SqlFunction);
    let (idle, m) = crate::metrics::recorded(|| offline.bring_online(conn).unwrap());
    assert_eq!(m.counter(telemetry::FALLBACKS, &[]), 1, "fell back");
    assert_eq!(history(conn, idle.id()).unwrap().len(), 2);
}

#[test]
fn a_database_without_the_migrations_says_so_on_a_german_server() {
    let db = TestDb::empty().in_german();
    let conn = &mut db.conn();
    assert!(matches!(
        Machine::<Offline>::create(conn, Uuid::new_v4()),
        Err(Error::NotMigrated("machines"))
    ));
    // A legacy database has the two tables but not the history.
    conn.batch_execute(LEGACY_FIXTURE).unwrap();
    assert!(matches!(
        history(conn, Uuid::new_v4()),
        Err(Error::NotMigrated("machine_state_transitions"))
    ));
}
