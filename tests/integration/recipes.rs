//! The starter, executor and stopper API: fencing by process id, at-most-once
//! operations, one winner among concurrent starters, the caller's writes in
//! the same transaction, and legacy SQL callers racing Rust ones.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::Text;
use machine_state::history::history;
use machine_state::{
    Action, AnyMachine, Error, Machine, Offline, RecipeRun, RetryPolicy, State, transaction,
};
use uuid::Uuid;

use crate::support::{TestDb, assert_consistent, idle_machine, snapshot};

#[test]
fn a_late_complete_for_an_older_run_is_refused_and_changes_nothing() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let machine = idle_machine(conn);
    let old = RecipeRun::on(machine).run(Uuid::new_v4());
    old.start(conn, Uuid::new_v4()).unwrap();
    old.stop(conn, Uuid::new_v4()).unwrap();
    let new = RecipeRun::on(machine).run(Uuid::new_v4());
    new.start(conn, Uuid::new_v4()).unwrap();
    let before = snapshot(conn);

    let refused = old.complete(conn, Uuid::new_v4()).unwrap_err();
    match refused {
        Error::Conflict { found, .. } => assert_eq!(found.process_id, Some(new.process_id)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        old.fail(conn, "late failure", Uuid::new_v4()),
        Err(Error::Conflict { .. })
    ));
    assert_eq!(snapshot(conn), before);
    new.complete(conn, Uuid::new_v4()).unwrap();
    assert_consistent(conn, machine);
}

#[test]
fn repeating_an_operation_reports_the_original_outcome() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let machine = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .id();
    let run = RecipeRun::on(machine).run(Uuid::new_v4());
    let (start, complete) = (Uuid::new_v4(), Uuid::new_v4());

    let started = run.start(conn, start).unwrap(); // from offline
    assert_eq!(run.start(conn, start).unwrap().since(), started.since());
    let done = run.complete(conn, complete).unwrap();
    let before = snapshot(conn);
    assert_eq!(run.complete(conn, complete).unwrap().since(), done.since());
    assert_eq!(run.start(conn, start).unwrap().since(), started.since());
    assert_eq!(snapshot(conn), before, "repeats write nothing");
    assert_eq!(history(conn, machine).unwrap().len(), 3);
}

#[test]
fn of_two_starters_racing_on_one_idle_machine_exactly_one_wins() {
    let db = TestDb::new();
    let pool = db.pool();
    for _ in 0..20 {
        let machine = idle_machine(&mut pool.get().unwrap());
        let barrier = Arc::new(Barrier::new(2));
        let starters: Vec<_> = (0..2)
            .map(|_| {
                let (pool, barrier) = (pool.clone(), Arc::clone(&barrier));
                thread::spawn(move || {
                    let conn = &mut pool.get().unwrap();
                    let run = RecipeRun::on(machine).run(Uuid::new_v4());
                    barrier.wait();
                    (run, run.start(conn, Uuid::new_v4()))
                })
            })
            .collect();
        let results: Vec<_> = starters.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<&RecipeRun> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(run, _)| run)
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        let loser = results.iter().find(|(_, r)| r.is_err()).unwrap();
        match &loser.1 {
            Err(Error::Conflict { found, .. }) => {
                assert_eq!(found.process_id, Some(winners[0].process_id));
            }
            other => panic!("the loser must be told who won: {other:?}"),
        }
        assert_consistent(&mut pool.get().unwrap(), machine);
    }
}

#[test]
fn one_run_cannot_be_started_on_two_machines() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let (first, second) = (idle_machine(conn), idle_machine(conn));
    let process = Uuid::new_v4();
    RecipeRun::on(first)
        .run(process)
        .start(conn, Uuid::new_v4())
        .unwrap();
    let before = snapshot(conn);
    let refused = RecipeRun::on(second)
        .run(process)
        .start(conn, Uuid::new_v4());
    assert!(
        matches!(refused, Err(Error::ProcessInUse(p)) if p == process),
        "{refused:?}"
    );
    assert_eq!(snapshot(conn), before);
}

#[derive(QueryableByName, Debug, PartialEq, Eq)]
struct Execution {
    #[diesel(sql_type = Text)]
    status: String,
}

fn execution_status(conn: &mut PgConnection, process: Uuid) -> String {
    sql_query("SELECT status FROM process_executions WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(process)
        .get_result::<Execution>(conn)
        .unwrap()
        .status
}

/// The legacy executor's own table, written beside the transition.
fn process_executions(conn: &mut PgConnection, process: Uuid) {
    conn.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS process_executions (
             id uuid PRIMARY KEY, status text NOT NULL, ended_at timestamptz, error_message text);
         INSERT INTO process_executions (id, status) VALUES ('{process}', 'running');"
    ))
    .unwrap();
}

fn finish_execution(conn: &mut PgConnection, process: Uuid, status: &str) -> Result<(), Error> {
    sql_query("UPDATE process_executions SET status = $2, ended_at = now() WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(process)
        .bind::<Text, _>(status)
        .execute(conn)?;
    Ok(())
}

#[test]
fn the_callers_writes_commit_with_the_transition_and_roll_back_with_a_refusal() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let machine = idle_machine(conn);
    let run = RecipeRun::on(machine).run(Uuid::new_v4());
    run.start(conn, Uuid::new_v4()).unwrap();
    process_executions(conn, run.process_id);

    // A stopper aborts the run first; the executor's completion is refused,
    // and its update of `process_executions` goes with it.
    run.stop(conn, Uuid::new_v4()).unwrap();
    let refused = transaction(conn, &RetryPolicy::default(), |conn| {
        finish_execution(conn, run.process_id, "completed")?;
        run.complete(conn, Uuid::new_v4())
    });
    assert!(
        matches!(refused, Err(Error::Conflict { .. })),
        "{refused:?}"
    );
    assert_eq!(execution_status(conn, run.process_id), "running");

    let next = RecipeRun::on(machine).run(Uuid::new_v4());
    next.start(conn, Uuid::new_v4()).unwrap();
    process_executions(conn, next.process_id);
    let idle = transaction(conn, &RetryPolicy::default(), |conn| {
        finish_execution(conn, next.process_id, "completed")?;
        next.complete(conn, Uuid::new_v4())
    })
    .unwrap();
    assert_eq!(execution_status(conn, next.process_id), "completed");
    assert_eq!(idle.state(), State::Idle);
    assert_consistent(conn, machine);
}

#[test]
fn a_transaction_that_loses_a_race_runs_the_callers_body_again() {
    let db = TestDb::new();
    let (conn, other) = (&mut db.conn(), &mut db.conn());
    let machine = idle_machine(conn);
    let run = RecipeRun::on(machine).run(Uuid::new_v4());
    run.start(conn, Uuid::new_v4()).unwrap();
    process_executions(conn, run.process_id);

    let mut attempts = 0;
    let operation = Uuid::new_v4();
    transaction(conn, &RetryPolicy::default(), |conn| {
        attempts += 1;
        sql_query("SELECT 1 FROM process_executions").execute(conn)?; // take the snapshot
        if attempts == 1 {
            // Someone else touches the same row and commits in between.
            finish_execution(other, run.process_id, "inspected").unwrap();
        }
        finish_execution(conn, run.process_id, "completed")?;
        run.complete(conn, operation)
    })
    .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(execution_status(conn, run.process_id), "completed");
    assert_eq!(history(conn, machine).unwrap().len(), 4, "applied once");
}

#[test]
fn legacy_sql_callers_and_rust_transitions_racing_never_diverge_the_tables() {
    let db = TestDb::new();
    let pool = db.pool();
    let machines: Vec<Uuid> = (0..3)
        .map(|_| idle_machine(&mut pool.get().unwrap()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    let workers: Vec<_> = (0..6)
        .map(|worker| {
            let (pool, machines) = (pool.clone(), machines.clone());
            thread::spawn(move || {
                let conn = &mut pool.get().unwrap();
                let mut applied = 0;
                while Instant::now() < deadline {
                    let machine = machines[fastrand::usize(..machines.len())];
                    applied += if worker % 2 == 0 {
                        legacy_sql_step(conn, machine)
                    } else {
                        rust_step(conn, machine)
                    };
                }
                applied
            })
        })
        .collect();
    let applied: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(
        applied > 10,
        "the workers must have done something: {applied}"
    );
    let conn = &mut pool.get().unwrap();
    for machine in machines {
        assert_consistent(conn, machine);
    }
}

/// One legacy wrapper call, as the Python callers make them; 1 if it applied.
fn legacy_sql_step(conn: &mut PgConnection, machine: Uuid) -> usize {
    let call = match fastrand::u8(..5) {
        0 => format!(
            "atomic_processing_machine_state('{machine}', '{}')",
            Uuid::new_v4()
        ),
        1 => format!("atomic_complete_machine_state('{machine}')"),
        2 => format!("atomic_error_machine_state('{machine}', 'legacy failure')"),
        3 => format!("atomic_stop_machine_state('{machine}')"),
        _ => {
            format!(
                "atomic_update_machine_state(p_machine_id => '{machine}', p_machine_status => 'idle')"
            )
        }
    };
    usize::from(conn.batch_execute(&format!("SELECT {call}")).is_ok())
}

/// One Rust transition of a kind the machine's state allows; 1 if it applied.
fn rust_step(conn: &mut PgConnection, machine: Uuid) -> usize {
    let Ok(loaded) = AnyMachine::load(conn, machine) else {
        return 0;
    };
    let action = match loaded.state() {
        State::Offline | State::Idle => Action::Start(Uuid::new_v4()),
        State::Processing => [
            Action::Complete,
            Action::Stop,
            Action::Fail("rust failure".into()),
        ][fastrand::usize(..3)]
        .clone(),
        State::Errored => Action::Reset,
    };
    match loaded.perform(conn, &action) {
        Ok(_) => 1,
        Err(refused) => match refused.error {
            Error::Conflict { .. } | Error::RetriesExhausted { .. } => 0,
            other => panic!("unexpected error: {other:?}"),
        },
    }
}
