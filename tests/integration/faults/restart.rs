//! An immediate server restart under load, and connections whose backend
//! died while idle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Integer, Text};
use machine_state::history::history;
use machine_state::{Action, AnyMachine, EmbeddedPostgres, Error, Pool, State, find_operation};
use uuid::Uuid;

use crate::support::harness::{describe, is_connection_lost, leftovers, sweep};
use crate::support::{TestDb, assert_consistent, idle_machine};

use super::*;

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    value: String,
}

/// The next legal action from a state.
fn next_action(state: State) -> Action {
    match state {
        State::Offline => Action::BringOnline,
        State::Idle => Action::Start(Uuid::new_v4()),
        State::Processing => Action::Complete,
        State::Errored => Action::Reset,
    }
}

/// Acknowledged transitions so far, to pace the test.
#[derive(Default)]
struct Acks {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Acks {
    fn add(&self) {
        *self.count.lock().unwrap() += 1;
        self.changed.notify_all();
    }

    fn get(&self) -> usize {
        *self.count.lock().unwrap()
    }

    fn wait_for(&self, n: usize) {
        let count = self.count.lock().unwrap();
        let (count, timeout) = self
            .changed
            .wait_timeout_while(count, PATIENCE, |count| *count < n)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "only {count} acknowledged transitions, waited for {n}"
        );
    }
}

/// One worker of the restart test: transitions on `machine` until `stop`,
/// returning every operation id and its outcome.
fn keep_transitioning(
    pool: &Pool,
    machine: Uuid,
    acks: &Acks,
    stop: &AtomicBool,
) -> Vec<(Uuid, Result<(), String>)> {
    let mut outcomes = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let mut conn = pool.get().expect("the pool reconnects within its timeout");
        let loaded = match AnyMachine::load(&mut conn, machine) {
            Ok(loaded) => loaded,
            Err(error) if is_connection_lost(&error) => continue,
            Err(error) => panic!("load failed: {}", describe(&error)),
        };
        let operation = Uuid::new_v4();
        let action = next_action(loaded.state());
        let result = loaded
            .with_operation_id(operation)
            .perform(&mut conn, &action);
        let outcome = match result {
            Ok(_) => {
                acks.add();
                Ok(())
            }
            Err(refused) => match refused.error {
                Error::OutcomeUnknown { .. } => Err("unknown".to_owned()),
                Error::Conflict { .. } | Error::RetriesExhausted { .. } => {
                    Err("refused".to_owned())
                }
                other => panic!("an untyped failure: {other:?}"),
            },
        };
        outcomes.push((operation, outcome));
    }
    outcomes
}

#[test]
fn an_immediate_restart_under_load_keeps_every_acknowledged_transition() {
    // A server of its own (the shared one serves the other tests), durable:
    // an acknowledged commit is on disk.
    let server = EmbeddedPostgres::builder().durable(true).start().unwrap();
    let url = server.url("postgres");
    let admin = &mut PgConnection::establish(&url).unwrap();
    for setting in ["fsync", "synchronous_commit"] {
        let value: Setting = sql_query(format!("SELECT current_setting('{setting}') AS value"))
            .get_result(admin)
            .unwrap();
        assert_eq!(value.value, "on", "{setting}");
    }
    machine_state::run_migrations(admin).unwrap();
    const WORKERS: usize = 4;
    const ACKS_PER_PHASE: usize = 40;
    let pool = machine_state::pool::pool_builder()
        .max_size(WORKERS as u32)
        .connection_timeout(PATIENCE)
        .build(machine_state::pool::Manager::new(&url).unwrap())
        .unwrap();
    // Two machines, two workers each: they contend too.
    let machines: Vec<Uuid> = (0..WORKERS / 2).map(|_| idle_machine(admin)).collect();
    let (acks, stop) = (Acks::default(), AtomicBool::new(false));
    // One more transition is surely in flight at the crash: blocked on a row
    // lock that another transaction holds.
    let in_flight = idle_machine(admin);
    let in_flight_operation = Uuid::new_v4();
    let lone = machine_state::pool::pool_builder()
        .max_size(1)
        .build(machine_state::pool::Manager::new(&url).unwrap())
        .unwrap();
    let mut lone_conn = lone.get().unwrap();
    let lone_pid = backend_pid(&mut lone_conn);
    let lone_idle = load_idle(&mut lone_conn, in_flight);
    let blocker = &mut PgConnection::establish(&url).unwrap();
    blocker
        .batch_execute(&format!(
            "BEGIN; UPDATE machines SET updated_at = updated_at WHERE id = '{in_flight}'"
        ))
        .unwrap();

    let (outcomes, in_flight_result) = thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let (pool, acks, stop) = (&pool, &acks, &stop);
                let machine = machines[worker % machines.len()];
                scope.spawn(move || keep_transitioning(pool, machine, acks, stop))
            })
            .collect();
        let blocked = scope.spawn(|| {
            // Waits for the lock without limit: it must still be waiting
            // at the crash.
            lone_idle
                .with_lock_timeout(Duration::ZERO)
                .with_operation_id(in_flight_operation)
                .start(&mut lone_conn, Uuid::new_v4())
                .map(|_| ())
                .map_err(|refused| refused.error)
        });
        wait_until_blocked(admin, lone_pid);
        acks.wait_for(ACKS_PER_PHASE);
        server.restart().unwrap();
        acks.wait_for(acks.get() + ACKS_PER_PHASE);
        stop.store(true, Ordering::SeqCst);
        let outcomes: Vec<(Uuid, Result<(), String>)> = workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect();
        (outcomes, blocked.join().unwrap())
    });

    let admin = &mut PgConnection::establish(&url).unwrap();
    match in_flight_result {
        Err(Error::OutcomeUnknown { operation_ids, .. }) => {
            assert_eq!(operation_ids, [in_flight_operation]);
        }
        other => panic!("the transition in flight at the crash: {other:?}"),
    }
    assert_eq!(find_operation(admin, in_flight_operation).unwrap(), None);
    assert_consistent(admin, in_flight);
    let mut tally: HashMap<&str, usize> = HashMap::new();
    for (operation, outcome) in &outcomes {
        let committed = find_operation(admin, *operation).unwrap().is_some();
        let kind = match outcome {
            Ok(()) => {
                assert!(committed, "acknowledged operation {operation} was lost");
                "acknowledged"
            }
            Err(kind) if kind == "unknown" && committed => "unknown, committed",
            Err(kind) if kind == "unknown" => "unknown, not committed",
            Err(_) => {
                assert!(!committed, "refused operation {operation} was written");
                "refused"
            }
        };
        *tally.entry(kind).or_default() += 1;
    }
    eprintln!("restart under load: {tally:?}");
    for &id in &machines {
        assert_consistent(admin, id);
    }
    // The pool hands out working connections again: a connection that died
    // with the server and has not been used since fails once, and is gone.
    let dead = sweep(&pool);
    assert!(dead <= WORKERS);
    assert_eq!(sweep(&pool), 0, "the pool still hands out dead connections");
    let found = leftovers(admin, "postgres");
    assert!(found.is_empty(), "{}", found.join("\n"));
    drop(pool);
    server.stop().unwrap();
}

#[test]
fn a_transition_on_a_connection_whose_backend_died_while_idle_is_an_unknown_outcome() {
    // The pool does not test connections on checkout (one round trip less
    // per transition), so it may hand out one whose backend is gone: the
    // transition must say `OutcomeUnknown` (here: it never reached the
    // server), and the pool must then replace the connection.
    let db = TestDb::new();
    let admin = &mut db.conn();
    let pool = machine_state::pool::pool_builder()
        .max_size(1)
        .build(machine_state::pool::Manager::new(&db.url).unwrap())
        .unwrap();
    let id = idle_machine(admin);
    let mut conn = pool.get().unwrap();
    let idle = load_idle(&mut conn, id);
    let pid = backend_pid(&mut conn);
    sql_query("SELECT pg_terminate_backend($1, 60000)")
        .bind::<Integer, _>(pid)
        .execute(admin)
        .unwrap();
    let operation = Uuid::new_v4();
    let refused = idle
        .with_operation_id(operation)
        .start(&mut conn, Uuid::new_v4())
        .unwrap_err();
    assert!(
        matches!(&refused.error, Error::OutcomeUnknown { operation_ids, .. } if *operation_ids == [operation]),
        "{:?}",
        refused.error
    );
    drop(conn);
    assert_eq!(find_operation(admin, operation).unwrap(), None);
    refused
        .machine
        .with_operation_id(operation)
        .start(&mut pool.get().unwrap(), Uuid::new_v4())
        .expect("the pool replaced the dead connection");
    assert_eq!(times_in_history(admin, id, operation), 1);
    assert_consistent(admin, id);
}

#[test]
fn a_read_on_a_connection_whose_backend_died_makes_the_pool_replace_it() {
    // The same for the reads (`AnyMachine::load`, `history`,
    // `find_operation`, the last being how an unknown outcome is resolved).
    let db = TestDb::new();
    let admin = &mut db.conn();
    let pool = machine_state::pool::pool_builder()
        .max_size(1)
        .build(machine_state::pool::Manager::new(&db.url).unwrap())
        .unwrap();
    let id = idle_machine(admin);
    type Read = fn(&mut PgConnection, Uuid) -> Result<(), Error>;
    let reads: [(&str, Read); 3] = [
        ("load", |conn, id| AnyMachine::load(conn, id).map(|_| ())),
        ("history", |conn, id| history(conn, id).map(|_| ())),
        ("find_operation", |conn, _| {
            find_operation(conn, Uuid::new_v4()).map(|_| ())
        }),
    ];
    for (name, read) in reads {
        let mut conn = pool.get().unwrap();
        let pid = backend_pid(&mut conn);
        sql_query("SELECT pg_terminate_backend($1, 60000)")
            .bind::<Integer, _>(pid)
            .execute(admin)
            .unwrap();
        let error = read(&mut conn, id).unwrap_err();
        assert!(is_connection_lost(&error), "{name}: {}", describe(&error));
        drop(conn);
        read(&mut pool.get().unwrap(), id)
            .unwrap_or_else(|e| panic!("{name} on the next connection: {}", describe(&e)));
    }
}
