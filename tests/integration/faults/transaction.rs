//! `transaction()`: a COMMIT whose reply is lost is an unknown outcome that
//! carries the operation ids of the transitions inside (and `find_operation`
//! resolves it); nothing inside an uncommitted transaction claims an unknown
//! outcome; the body's own error type carries its own reasons, and a race it
//! lost is run again whatever that type is.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use machine_state::{Error, RecipeRun, RetryPolicy, find_operation, transaction};
use uuid::Uuid;

use crate::support::proxy::{At, Fault, Proxy};
use crate::support::{TestDb, assert_consistent, idle_machine, server};

/// The caller's own error type: its own reasons, and the crate's.
#[derive(Debug)]
enum ExecutorError {
    /// The caller decided to roll back.
    RecipeRejected(&'static str),
    /// The crate refused or failed.
    Machine(Error),
}

impl From<Error> for ExecutorError {
    fn from(error: Error) -> Self {
        ExecutorError::Machine(error)
    }
}

impl<M> From<machine_state::TransitionError<M>> for ExecutorError {
    fn from(error: machine_state::TransitionError<M>) -> Self {
        ExecutorError::Machine(error.error)
    }
}

const OWN_TABLE: &str =
    "CREATE TABLE process_executions (id uuid PRIMARY KEY, status text NOT NULL)";

fn own_rows(conn: &mut PgConnection) -> i64 {
    use diesel::dsl::sql;
    use diesel::sql_types::BigInt;
    diesel::select(sql::<BigInt>("(SELECT count(*) FROM process_executions)"))
        .get_result(conn)
        .unwrap()
}

/// Two machines started and the caller's own row written in one
/// `transaction()` through the proxy, with `fault` at its COMMIT.
fn commit_with(fault: Fault) {
    let db = TestDb::new();
    let admin = &mut db.conn();
    admin.batch_execute(OWN_TABLE).unwrap();
    let runs = [
        RecipeRun::on(idle_machine(admin)).run(Uuid::new_v4()),
        RecipeRun::on(idle_machine(admin)).run(Uuid::new_v4()),
    ];
    let operations = [Uuid::new_v4(), Uuid::new_v4()];
    let proxy = Proxy::start(server().socket_dir().join(".s.PGSQL.5432"));
    let conn = &mut PgConnection::establish(&proxy.url(&db.name)).unwrap();
    proxy.arm(At::Commit, fault);
    let result = transaction(conn, &RetryPolicy::default(), |conn| {
        for (run, operation) in runs.iter().zip(operations) {
            run.start(conn, operation)?;
        }
        diesel::sql_query("INSERT INTO process_executions VALUES ($1, 'running')")
            .bind::<diesel::sql_types::Uuid, _>(runs[0].process_id)
            .execute(conn)
            .map_err(Error::from)?;
        Ok::<_, ExecutorError>(())
    });
    assert!(proxy.fired(), "the fault was not injected");
    match &result {
        Err(ExecutorError::Machine(error @ Error::OutcomeUnknown { operation_ids, .. })) => {
            assert_eq!(*operation_ids, operations);
            assert!(error.is_retryable());
            let message = error.to_string();
            assert!(message.contains(&operations[1].to_string()), "{message}");
        }
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
    // Resolved by the operation ids: all of it committed, or none.
    let committed = fault == Fault::LoseReply;
    for (run, operation) in runs.iter().zip(operations) {
        let found = find_operation(admin, operation).unwrap();
        assert_eq!(found.is_some(), committed, "{fault:?}");
        assert_consistent(admin, run.machine_id);
    }
    assert_eq!(own_rows(admin), i64::from(committed));
}

#[test]
fn a_lost_commit_reply_of_a_transaction_is_an_unknown_outcome_resolved_by_its_operation_ids() {
    commit_with(Fault::LoseReply);
}

#[test]
fn a_commit_of_a_transaction_that_never_arrived_is_an_unknown_outcome_resolved_as_not_applied() {
    commit_with(Fault::DropRequest);
}

#[test]
fn a_connection_lost_inside_a_transaction_is_not_an_unknown_outcome() {
    let db = TestDb::new();
    let admin = &mut db.conn();
    let run = RecipeRun::on(idle_machine(admin)).run(Uuid::new_v4());
    let proxy = Proxy::start(server().socket_dir().join(".s.PGSQL.5432"));
    let conn = &mut PgConnection::establish(&proxy.url(&db.name)).unwrap();
    let operation = Uuid::new_v4();
    proxy.arm(At::Statement, Fault::DropRequest);
    let result = transaction(conn, &RetryPolicy::default(), |conn| {
        run.start(conn, operation)?;
        Ok::<_, Error>(())
    });
    assert!(proxy.fired(), "the fault was not injected");
    match result {
        Err(error @ Error::ConnectionLost(_)) => assert!(error.is_retryable()),
        other => panic!("expected a lost connection (nothing committed), got {other:?}"),
    }
    assert_eq!(find_operation(admin, operation).unwrap(), None);
    assert_consistent(admin, run.machine_id);
}

#[test]
fn the_bodys_own_error_rolls_back_and_comes_back_as_it_was() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let run = RecipeRun::on(idle_machine(conn)).run(Uuid::new_v4());
    let operation = Uuid::new_v4();
    let result = transaction(conn, &RetryPolicy::default(), |conn| {
        run.start(conn, operation)?;
        Err::<(), _>(ExecutorError::RecipeRejected(
            "chamber pressure out of range",
        ))
    });
    assert!(matches!(
        result,
        Err(ExecutorError::RecipeRejected(
            "chamber pressure out of range"
        ))
    ));
    assert_eq!(
        find_operation(conn, operation).unwrap(),
        None,
        "rolled back"
    );
    assert_consistent(conn, run.machine_id);
}

#[test]
fn a_race_lost_inside_a_body_with_its_own_error_type_is_run_again() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let other = &mut db.conn();
    let run = RecipeRun::on(idle_machine(conn)).run(Uuid::new_v4());
    let mut runs = 0;
    let result = transaction(conn, &RetryPolicy::default(), |conn| {
        runs += 1;
        // The snapshot is taken by the first statement; another session
        // then changes the machine (first run only): 40001 on its write.
        diesel::sql_query("SELECT 1")
            .execute(conn)
            .map_err(Error::from)?;
        if runs == 1 {
            other
                .batch_execute(&format!(
                    "UPDATE machines SET updated_at = updated_at WHERE id = '{}'",
                    run.machine_id
                ))
                .unwrap();
        }
        run.start(conn, Uuid::new_v4())?;
        Ok::<_, ExecutorError>(())
    });
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(runs, 2, "the body ran again after its lost race");
    assert_consistent(conn, run.machine_id);
}
