//! Faults at the worst moments: a backend killed between the two table
//! writes, a COMMIT whose reply is lost (or that never arrives), forced
//! serialization failures and deadlocks, an immediate server restart under
//! load. Each ends with the same checks as the concurrency harness.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_query;
use diesel::sql_types::{Integer, Nullable, Text, Uuid as SqlUuid};
use machine_state::{
    Action, AnyMachine, EmbeddedPostgres, Error, Idle, Machine, Pool, PooledConnection,
    RetryPolicy, State, find_operation, history,
};
use uuid::Uuid;

use crate::support::harness::{
    Chaos, CrateWriter, HarnessDb, Outcome, Writer, describe, diverged, is_connection_lost,
    leftovers, property, run_case, schedules, sweep,
};
use crate::support::legacy_writer::LegacyWriter;
use crate::support::proxy::{At, Fault, Proxy};
use crate::support::{TestDb, assert_consistent, idle_machine, server, snapshot, violations};

/// How long a test waits for a condition before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// A test-only trigger: an update of a machine's `machine_state` row whose
/// id is in `test_kill_switch` terminates its own backend, after checking
/// that the `machines` row has been written already: the backend dies
/// *between* the two table writes.
const KILL_SWITCH: &str = "
CREATE TABLE test_kill_switch (machine_id uuid PRIMARY KEY);
CREATE FUNCTION test_kill_between_writes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM test_kill_switch WHERE machine_id = NEW.machine_id) THEN
        IF (SELECT status FROM machines WHERE id = NEW.machine_id)
           IS DISTINCT FROM NEW.current_state THEN
            RAISE EXCEPTION 'test: `machines` was not written before `machine_state`';
        END IF;
        PERFORM pg_terminate_backend(pg_backend_pid());
        PERFORM pg_sleep(30); -- interrupted by the termination
        RAISE EXCEPTION 'test: the backend survived its termination';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER test_kill_between_writes BEFORE UPDATE ON machine_state
    FOR EACH ROW EXECUTE FUNCTION test_kill_between_writes();
";

fn arm_kill(conn: &mut PgConnection, machine_id: Uuid) {
    conn.batch_execute(&format!(
        "INSERT INTO test_kill_switch VALUES ('{machine_id}')"
    ))
    .unwrap();
}

fn disarm_kill(conn: &mut PgConnection, machine_id: Uuid) {
    conn.batch_execute(&format!(
        "DELETE FROM test_kill_switch WHERE machine_id = '{machine_id}'"
    ))
    .unwrap();
}

/// Load a machine known to be idle.
fn load_idle(conn: &mut PgConnection, id: Uuid) -> Machine<Idle> {
    match AnyMachine::load(conn, id).unwrap() {
        AnyMachine::Idle(machine) => machine,
        other => panic!("expected an idle machine, found {other:?}"),
    }
}

/// How many history rows an operation wrote.
fn times_in_history(conn: &mut PgConnection, machine_id: Uuid, operation_id: Uuid) -> usize {
    history(conn, machine_id)
        .unwrap()
        .iter()
        .filter(|entry| entry.operation_id == operation_id)
        .count()
}

#[track_caller]
fn assert_no_leftovers(conn: &mut PgConnection, db: &TestDb) {
    let found = leftovers(conn, &db.name);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// `idle -> processing` on `conn` with the kill switch armed: the backend
/// dies between the writes; the outcome is unknown, nothing is written.
fn start_killed_between_writes(
    admin: &mut PgConnection,
    conn: &mut PgConnection,
    id: Uuid,
    operation_id: Uuid,
) -> Machine<Idle> {
    let idle = load_idle(conn, id);
    arm_kill(admin, id);
    let before = snapshot(admin);
    let refused = idle
        .with_operation_id(operation_id)
        .start(conn, Uuid::new_v4())
        .unwrap_err();
    match &refused.error {
        Error::OutcomeUnknown {
            operation_id: reported,
            ..
        } => assert_eq!(*reported, operation_id),
        other => panic!("expected an unknown outcome, got: {}", describe(other)),
    }
    assert_eq!(snapshot(admin), before, "something was half-applied");
    assert_consistent(admin, id);
    assert_eq!(find_operation(admin, operation_id).unwrap(), None);
    disarm_kill(admin, id);
    refused.machine
}

#[test]
fn a_backend_killed_between_the_two_table_writes_leaves_nothing_half_applied() {
    let db = TestDb::new();
    let admin = &mut db.conn();
    admin.batch_execute(KILL_SWITCH).unwrap();

    // On the crate's pool (one autocommit statement), with a single
    // connection: the killed one must not be handed out again.
    let pool = machine_state::pool_builder()
        .max_size(1)
        .build(machine_state::Manager::new(&db.url).unwrap())
        .unwrap();
    let id = idle_machine(admin);
    let operation = Uuid::new_v4();
    let idle = start_killed_between_writes(admin, &mut pool.get().unwrap(), id, operation);
    let retried = idle
        .with_operation_id(operation)
        .start(&mut pool.get().unwrap(), Uuid::new_v4())
        .expect("the pool hands out a working connection, and the retry applies");
    assert_eq!(times_in_history(admin, id, operation), 1);
    retried.complete(&mut pool.get().unwrap()).unwrap();
    assert_consistent(admin, id);

    // On a plain connection (explicit REPEATABLE READ transaction).
    let id = idle_machine(admin);
    let operation = Uuid::new_v4();
    let idle = start_killed_between_writes(admin, &mut db.conn(), id, operation);
    idle.with_operation_id(operation)
        .start(&mut db.conn(), Uuid::new_v4())
        .unwrap();
    assert_eq!(times_in_history(admin, id, operation), 1);
    assert_consistent(admin, id);
    assert_no_leftovers(admin, &db);
}

#[test]
fn the_sql_function_killed_between_its_two_writes_leaves_nothing_half_applied() {
    let db = TestDb::new();
    let admin = &mut db.conn();
    admin.batch_execute(KILL_SWITCH).unwrap();
    let id = idle_machine(admin);
    arm_kill(admin, id);
    let before = snapshot(admin);
    let error = sql_query("SELECT 1 FROM machine_state_transition($1, 'idle', 'processing', $2)")
        .bind::<SqlUuid, _>(id)
        .bind::<Nullable<SqlUuid>, _>(Some(Uuid::new_v4()))
        .execute(&mut db.conn())
        .unwrap_err();
    assert!(
        matches!(
            error,
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _
            )
        ),
        "{error:?}"
    );
    assert_eq!(snapshot(admin), before);
    assert_consistent(admin, id);
    assert_no_leftovers(admin, &db);
}

#[test]
fn the_legacy_writer_killed_between_its_two_writes_diverges_the_tables() {
    // The control: the same fault does break the legacy pattern, so the two
    // tests above would notice a write path that is not atomic.
    let db = TestDb::new();
    let admin = &mut db.conn();
    admin.batch_execute(KILL_SWITCH).unwrap();
    let id = idle_machine(admin);
    arm_kill(admin, id);
    let conn = &mut db.conn();
    let view = LegacyWriter.load(conn, id).unwrap();
    let (outcome, _) =
        LegacyWriter.perform(conn, view, &Action::Start(Uuid::new_v4()), Uuid::new_v4());
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    assert_eq!(diverged(admin, &[id]), [id]);
    assert!(!violations(admin, id).is_empty());
}

#[test]
fn killing_backends_under_load_never_diverges_the_two_tables() {
    // Another session terminates random busy backends while the workers run:
    // some outcomes are unknown, each applied at most once, and the check
    // after every case holds.
    let db = HarnessDb::new();
    let writer = CrateWriter::default();
    let outcomes = Mutex::new(BTreeMap::new());
    property(
        "killing_backends_under_load_never_diverges_the_two_tables",
        16,
        schedules(),
        |schedule| {
            let report = run_case(&db, &writer, Chaos::KillBackends, &schedule);
            let mut outcomes = outcomes.lock().unwrap();
            for (outcome, n) in &report.outcomes {
                *outcomes.entry(outcome.clone()).or_insert(0) += n;
            }
            report.into_result()
        },
    );
    eprintln!(
        "killing backends under load: outcomes {:?}",
        outcomes.into_inner().unwrap()
    );
}

// ---------------------------------------------------------------------------
// Lost requests and replies

/// A pooled or a plain connection.
enum Client {
    Pooled(PooledConnection),
    Plain(PgConnection),
}

impl Deref for Client {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match self {
            Client::Pooled(conn) => conn,
            Client::Plain(conn) => conn,
        }
    }
}

impl DerefMut for Client {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Client::Pooled(conn) => conn,
            Client::Plain(conn) => conn,
        }
    }
}

/// `idle -> processing` through the proxy with `fault` at `at`, then the
/// outcome resolved by operation id and the transition retried with it.
fn lose_request_or_reply(at: At, fault: Fault) {
    let db = TestDb::new();
    let admin = &mut db.conn();
    let proxy = Proxy::start(server().socket_dir().join(".s.PGSQL.5432"));
    let url = proxy.url(&db.name);
    // `At::Statement`: the crate's pool, where a transition is one autocommit
    // statement. `At::Commit`: a plain session, where it is an explicit
    // transaction ended by `COMMIT`.
    let pool = machine_state::pool_builder()
        .max_size(1)
        .build(machine_state::Manager::new(&url).unwrap())
        .unwrap();
    let connect = || match at {
        At::Statement => Client::Pooled(pool.get().unwrap()),
        At::Commit => Client::Plain(PgConnection::establish(&url).unwrap()),
    };

    let id = idle_machine(admin);
    let operation = Uuid::new_v4();
    let run = Uuid::new_v4();
    let mut first = connect();
    let conn = &mut *first;
    let idle = load_idle(conn, id);
    proxy.arm(at, fault);
    let refused = idle
        .with_operation_id(operation)
        .start(conn, run)
        .unwrap_err();
    match &refused.error {
        Error::OutcomeUnknown {
            operation_id: reported,
            ..
        } => assert_eq!(*reported, operation),
        other => panic!("expected an unknown outcome, got: {}", describe(other)),
    }
    assert!(proxy.fired(), "the fault was not injected");
    // Back to the pool, which must discard it.
    drop(first);

    // Resolve the outcome by the operation id: never guess.
    let found = find_operation(admin, operation).unwrap();
    match fault {
        Fault::LoseReply => {
            let entry = found
                .as_ref()
                .expect("the server committed before the reply was lost");
            assert_eq!(
                (entry.machine_id, entry.to_state.as_str()),
                (id, "processing")
            );
            assert_eq!(entry.process_id, Some(run));
        }
        Fault::DropRequest => assert_eq!(found, None, "the request never reached the server"),
    }
    assert_consistent(admin, id);

    // Retry with the same operation id: applied exactly once in all.
    let processing = refused
        .machine
        .with_operation_id(operation)
        .start(&mut connect(), run)
        .expect("a working connection again, and the retry succeeds");
    assert_eq!(processing.process_id(), run);
    if let Some(entry) = &found {
        assert_eq!(
            processing.since(),
            entry.transitioned_at,
            "the first outcome"
        );
    }
    assert_eq!(times_in_history(admin, id, operation), 1);
    assert_eq!(
        history(admin, id).unwrap().len(),
        3,
        "create, online, start"
    );
    assert_consistent(admin, id);
    assert_no_leftovers(admin, &db);
}

#[test]
fn a_lost_reply_to_an_autocommit_transition_is_resolved_by_its_operation_id() {
    lose_request_or_reply(At::Statement, Fault::LoseReply);
}

#[test]
fn an_autocommit_transition_that_never_reached_the_server_applies_once_on_retry() {
    lose_request_or_reply(At::Statement, Fault::DropRequest);
}

#[test]
fn a_lost_commit_reply_is_resolved_by_its_operation_id() {
    lose_request_or_reply(At::Commit, Fault::LoseReply);
}

#[test]
fn a_commit_that_never_reached_the_server_applies_once_on_retry() {
    lose_request_or_reply(At::Commit, Fault::DropRequest);
}

// ---------------------------------------------------------------------------
// Forced serialization failures and deadlocks

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

pub(crate) fn backend_pid(conn: &mut PgConnection) -> i32 {
    sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn)
        .unwrap()
        .pid
}

/// Wait until backend `pid` waits for a lock.
pub(crate) fn wait_until_blocked(conn: &mut PgConnection, pid: i32) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let blocked: Vec<Pid> = sql_query(
            "SELECT pid FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
        )
        .bind::<Integer, _>(pid)
        .load(conn)
        .unwrap();
        if !blocked.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "backend {pid} never blocked");
        thread::sleep(Duration::from_millis(2));
    }
}

/// Which race to force.
#[derive(Clone, Copy, Debug)]
enum Race {
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
    let db = TestDb::new();
    let admin = &mut db.conn();
    let pool = machine_state::pool_builder()
        .max_size(1)
        .build(machine_state::Manager::new(&db.url).unwrap())
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

fn assert_retries_exhausted(result: Result<(), Error>, race: &str) {
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

// ---------------------------------------------------------------------------
// An immediate server restart under load

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
        State::Error => Action::Reset,
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
    let pool = machine_state::pool_builder()
        .max_size(WORKERS as u32)
        .connection_timeout(PATIENCE)
        .build(machine_state::Manager::new(&url).unwrap())
        .unwrap();
    // Two machines, two workers each: they contend too.
    let machines: Vec<Uuid> = (0..WORKERS / 2).map(|_| idle_machine(admin)).collect();
    let (acks, stop) = (Acks::default(), AtomicBool::new(false));
    // One more transition is surely in flight at the crash: blocked on a row
    // lock that another transaction holds.
    let in_flight = idle_machine(admin);
    let in_flight_operation = Uuid::new_v4();
    let lone = machine_state::pool_builder()
        .max_size(1)
        .build(machine_state::Manager::new(&url).unwrap())
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
        Err(Error::OutcomeUnknown { operation_id, .. }) => {
            assert_eq!(operation_id, in_flight_operation);
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
    let pool = machine_state::pool_builder()
        .max_size(1)
        .build(machine_state::Manager::new(&db.url).unwrap())
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
        matches!(refused.error, Error::OutcomeUnknown { operation_id, .. } if operation_id == operation),
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
    let pool = machine_state::pool_builder()
        .max_size(1)
        .build(machine_state::Manager::new(&db.url).unwrap())
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
