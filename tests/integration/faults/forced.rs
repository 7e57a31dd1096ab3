//! Forced serialization failures and deadlocks: retried to success, or a
//! typed error without retries.

use std::thread;

use diesel::connection::SimpleConnection;
use machine_state::{Error, RetryPolicy};
use uuid::Uuid;

use crate::support::harness::describe;
use crate::support::{TestDb, assert_consistent, idle_machine};

use super::*;

/// Which race to force.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Race {
    /// Another transaction updates the row the transition waits for, then
    /// commits: 40001 under REPEATABLE READ.
    Serialization,
    /// Another transaction locks `machine_state`, the transition locks
    /// `machines` and waits, the other then wants `machines`: 40P01.
    Deadlock,
}

/// Force `race` on one `idle -> processing` under `policy`; returns its
/// result and leaves the database checked.
fn forced(race: Race, policy: RetryPolicy) -> Result<(), Error> {
    forced_on(TestDb::new(), race, policy)
}

/// [`forced`] on `db` (a migrated database).
pub(crate) fn forced_on(db: TestDb, race: Race, policy: RetryPolicy) -> Result<(), Error> {
    let admin = &mut db.conn();
    let pool = machine_state::pool::pool_builder()
        .max_size(1)
        .build(machine_state::pool::Manager::new(&db.url).unwrap())
        .unwrap();
    let id = idle_machine(admin);
    let mut conn = pool.get().unwrap();
    let idle = load_idle(&mut conn, id).with_retry_policy(policy);
    let pid = backend_pid(&mut conn);
    let other = &mut db.conn();
    match race {
        Race::Serialization => other.batch_execute(&format!(
            "BEGIN; UPDATE machines SET updated_at = updated_at WHERE id = '{id}'"
        )),
        Race::Deadlock => {
            // Let the transition's backend be the one that detects it: a
            // backend looks for a deadlock once, `deadlock_timeout` after it
            // started waiting, so the other one must be waiting by then too
            // (it starts right after the transition is seen blocked).
            conn.batch_execute("SET deadlock_timeout = '2s'").unwrap();
            other.batch_execute(&format!(
                "SET deadlock_timeout = '60s'; BEGIN;
                 UPDATE machine_state SET updated_at = updated_at WHERE machine_id = '{id}'"
            ))
        }
    }
    .unwrap();
    let result = thread::scope(|scope| {
        let transition = scope.spawn(|| {
            idle.start(&mut conn, Uuid::new_v4())
                .map(|_| ())
                .map_err(|refused| refused.error)
        });
        wait_until_blocked(admin, pid);
        if let Race::Deadlock = race {
            // Blocks until the deadlock is detected and the transition's
            // statement is rolled back.
            other
                .batch_execute(&format!(
                    "UPDATE machines SET updated_at = updated_at WHERE id = '{id}'"
                ))
                .unwrap();
        }
        other.batch_execute("COMMIT").unwrap();
        transition.join().unwrap()
    });
    drop(conn);
    assert_consistent(admin, id);
    assert_no_leftovers(admin, &db);
    result
}

pub(crate) fn assert_retries_exhausted(result: Result<(), Error>, race: &str) {
    match result {
        Err(Error::RetriesExhausted { attempts, source }) => {
            assert_eq!(attempts, 1);
            assert!(describe(&source).contains(race), "{source:?}");
        }
        other => panic!("expected retries exhausted, got {other:?}"),
    }
}

#[test]
fn a_forced_serialization_failure_is_retried_to_success() {
    forced(Race::Serialization, RetryPolicy::default()).unwrap();
}

#[test]
fn a_forced_serialization_failure_without_retries_is_a_typed_error() {
    let result = forced(Race::Serialization, RetryPolicy::never());
    assert_retries_exhausted(result, "could not serialize access");
}

#[test]
fn a_forced_deadlock_is_retried_to_success() {
    forced(Race::Deadlock, RetryPolicy::default()).unwrap();
}

#[test]
fn a_forced_deadlock_without_retries_is_a_typed_error() {
    let result = forced(Race::Deadlock, RetryPolicy::never());
    assert_retries_exhausted(result, "deadlock detected");
}
