//! Maintenance on a running factory: preparing and pruning the history's
//! partitions, and turning enforcement on, while transitions run and another
//! session holds a table open (a report's long read, an operator's `psql` or a
//! stalled executor left in a transaction). No transition stalls more than
//! 2 s; each applies once the session ends, or gives up within its budget
//! naming it, with nothing changed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Integer, Text, Uuid as SqlUuid};
use machine_state::history::{prepare_history_with, prune_history_with};
use machine_state::{AnyMachine, Error, Idle, Machine, MigrationOptions};
use uuid::Uuid;

use crate::cli::bare;
use crate::retention::{age, daily_partitions, operation_days_ago};
use crate::support::{TestDb, assert_consistent};

/// The longest a transition may stall while retention waits.
const MAX_STALL: Duration = Duration::from_secs(2);

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A machine registered 100 days ago whose recipe ran 40 days ago (in a daily
/// partition of that day, created for it) and which has not moved since; its
/// id.
fn machine_idle_for_40_days(conn: &mut PgConnection) -> Uuid {
    conn.batch_execute("SELECT machine_state_prepare_history(0, now() - interval '40 days')")
        .unwrap();
    let id = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap().id();
    age(conn, id, 100);
    let process = Uuid::new_v4();
    for (n, (from, to)) in [("idle", "processing"), ("processing", "idle")]
        .into_iter()
        .enumerate()
    {
        sql_query("SELECT 1 FROM machine_state_transition($1, $2, $3, $4, NULL, $5)")
            .bind::<SqlUuid, _>(id)
            .bind::<Text, _>(from)
            .bind::<Text, _>(to)
            .bind::<SqlUuid, _>(process)
            .bind::<SqlUuid, _>(operation_days_ago(40, n as u16))
            .execute(conn)
            .unwrap();
    }
    id
}

/// A machine moved back and forth (`take_offline`, `bring_online`) by the
/// crate every 20 ms on a connection of its own, recording the longest any
/// one transition took.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Duration, u32)>,
}

impl Writer {
    fn start(db: &TestDb) -> Writer {
        let mut conn = db.conn();
        let id = Machine::<Idle>::create(&mut conn, Uuid::new_v4())
            .unwrap()
            .id();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let (mut worst, mut moves) = (Duration::ZERO, 0);
            while !flag.load(Ordering::Relaxed) {
                let began = Instant::now();
                match AnyMachine::load(&mut conn, id).unwrap() {
                    AnyMachine::Idle(m) => drop(m.take_offline(&mut conn).unwrap()),
                    AnyMachine::Offline(m) => drop(m.bring_online(&mut conn).unwrap()),
                    other => panic!("unexpected {other:?}"),
                }
                worst = worst.max(began.elapsed());
                moves += 1;
                thread::sleep(Duration::from_millis(20));
            }
            assert_consistent(&mut conn, id);
            (worst, moves)
        });
        Writer { stop, thread }
    }

    /// Stop, assert that no transition stalled, and return the worst.
    #[track_caller]
    fn assert_never_stalled(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        let (worst, moves) = self.thread.join().unwrap();
        assert!(moves > 10, "the writer moved only {moves} times");
        assert!(worst < MAX_STALL, "a transition stalled for {worst:?}");
        worst
    }
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// A session named `history-report` holding a read of `relation` open in a
/// transaction, ended after `after`; its pid and the thread that ends it.
fn hold_open(db: &TestDb, relation: &str, after: Duration) -> (i32, JoinHandle<()>) {
    let mut conn = db.conn();
    let pid = sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut conn)
        .unwrap()
        .pid;
    conn.batch_execute(&format!(
        "SET application_name = 'history-report';
         BEGIN;
         SELECT count(*) FROM {relation};"
    ))
    .unwrap();
    let release = thread::spawn(move || {
        thread::sleep(after);
        conn.batch_execute("ROLLBACK").unwrap();
    });
    (pid, release)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    count: i64,
}

fn entries(conn: &mut PgConnection) -> i64 {
    sql_query("SELECT count(*) AS count FROM machine_state_transitions")
        .get_result::<Count>(conn)
        .unwrap()
        .count
}

fn patience(lock_timeout_ms: u64, budget: Duration) -> MigrationOptions {
    MigrationOptions::default()
        .with_lock_timeout(Duration::from_millis(lock_timeout_ms))
        .with_budget(budget)
}

#[test]
fn pruning_behind_a_reader_of_the_history_stalls_no_transition_and_applies_once_it_ends() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let idle = machine_idle_for_40_days(conn);
    let partitions = daily_partitions(conn);
    let writer = Writer::start(&db);
    thread::sleep(Duration::from_millis(200));
    let (_, release) = hold_open(&db, "machine_state_transitions", Duration::from_secs(3));
    let began = Instant::now();
    // The registration (default partition, row by row) and the start of 40
    // days ago go; the machine's latest entry stays.
    let removed = prune_history_with(
        conn,
        30 * DAY,
        1000,
        &patience(300, Duration::from_secs(30)),
    )
    .unwrap();
    let took = began.elapsed();
    release.join().unwrap();
    let worst = writer.assert_never_stalled();
    eprintln!("pruned behind a 3 s reader in {took:?}; worst transition {worst:?}");
    assert_eq!(removed, 2);
    assert!(took >= Duration::from_secs(2), "it did not wait: {took:?}");
    assert_eq!(daily_partitions(conn), partitions - 1);
    assert_consistent(conn, idle);
}

#[test]
fn pruning_gives_up_within_its_budget_naming_the_reader_and_removes_nothing() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    machine_idle_for_40_days(conn);
    let (partitions, before) = (daily_partitions(conn), entries(conn));
    let writer = Writer::start(&db);
    let (pid, release) = hold_open(&db, "machine_state_transitions", Duration::from_secs(5));
    let began = Instant::now();
    let error = prune_history_with(
        conn,
        30 * DAY,
        1000,
        &patience(200, Duration::from_millis(1500)),
    )
    .unwrap_err();
    let took = began.elapsed();
    release.join().unwrap();
    writer.assert_never_stalled();
    let Error::Blocked { blockers, .. } = &error else {
        panic!("expected Blocked, got {error:?}");
    };
    assert!(blockers.iter().any(|b| b.pid == pid), "{error}");
    assert!(error.is_retryable());
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(daily_partitions(conn), partitions);
    assert!(entries(conn) >= before, "entries were removed");
}

#[test]
fn preparing_behind_a_reader_of_the_default_partition_gives_up_within_its_budget() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    // Today's partition is missing (the migration starts tomorrow):
    // attaching it checks the default partition, which the reader holds.
    let partitions = daily_partitions(conn);
    let writer = Writer::start(&db);
    let (pid, release) = hold_open(
        &db,
        "machine_state_transitions_default",
        Duration::from_secs(4),
    );
    let error = prepare_history_with(conn, 0, &patience(200, Duration::from_secs(1))).unwrap_err();
    let Error::Blocked { blockers, .. } = &error else {
        panic!("expected Blocked, got {error:?}");
    };
    assert!(blockers.iter().any(|b| b.pid == pid), "{error}");
    assert_eq!(daily_partitions(conn), partitions, "nothing is created");
    release.join().unwrap();
    writer.assert_never_stalled();
    assert_eq!(
        prepare_history_with(conn, 0, &MigrationOptions::default())
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn the_cli_prune_history_exits_with_1_naming_the_reader() {
    let db = TestDb::new();
    machine_idle_for_40_days(&mut db.conn());
    let (pid, release) = hold_open(&db, "machine_state_transitions", Duration::from_secs(4));
    let output = bare()
        .args([
            "--database-url",
            &db.url,
            "prune-history",
            "--older-than",
            "30days",
        ])
        .args(["--ddl-lock-timeout", "200ms", "--budget", "1s"])
        .output()
        .unwrap();
    release.join().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: pruning the history gave up after")
            && stderr.contains(&format!("blocked by backend {pid} (`history-report`")),
        "{stderr}"
    );
}

#[test]
fn enforcing_behind_a_stalled_executor_stalls_no_transition_and_gives_up_within_its_budget() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let held = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap().id();
    let writer = Writer::start(&db);
    // A legacy executor stalled between its two writes: a row of `machines`
    // locked in an open transaction.
    let mut holder = db.conn();
    let pid = sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut holder)
        .unwrap()
        .pid;
    holder
        .batch_execute(&format!(
            "SET application_name = 'stalled-executor';
             BEGIN;
             UPDATE machines SET updated_at = updated_at WHERE id = '{held}';"
        ))
        .unwrap();
    let began = Instant::now();
    let refused = conn
        .batch_execute(
            "SET statement_timeout = '10s';
             SET machine_state.ddl_lock_timeout = '200ms';
             SET machine_state.ddl_budget = '1s';
             SELECT machine_state_enforce_invariants();",
        )
        .unwrap_err();
    let took = began.elapsed();
    let message = refused.to_string();
    assert!(
        message.contains("enforcing the pair invariants gave up after")
            && message.contains(&format!("backend {pid} (stalled-executor")),
        "{message}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(!crate::support::invariants_enforced(conn));
    // Once it ends, enforcement goes on.
    let release = thread::spawn(move || {
        thread::sleep(Duration::from_secs(1));
        holder.batch_execute("ROLLBACK").unwrap();
    });
    conn.batch_execute(
        "RESET statement_timeout;
         RESET machine_state.ddl_lock_timeout;
         RESET machine_state.ddl_budget;
         SELECT machine_state_enforce_invariants();",
    )
    .unwrap();
    release.join().unwrap();
    assert!(crate::support::invariants_enforced(conn));
    // Relaxing waits the same way.
    let mut holder = db.conn();
    holder
        .batch_execute(&format!(
            "BEGIN; UPDATE machines SET updated_at = updated_at WHERE id = '{held}';"
        ))
        .unwrap();
    let refused = conn
        .batch_execute(
            "SET machine_state.ddl_budget = '1s';
             SELECT machine_state_relax_invariants();",
        )
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("relaxing the pair invariants gave up after"),
        "{refused}"
    );
    assert!(crate::support::invariants_enforced(conn));
    holder.batch_execute("ROLLBACK").unwrap();
    conn.batch_execute("SELECT machine_state_relax_invariants()")
        .unwrap();
    assert!(!crate::support::invariants_enforced(conn));
    writer.assert_never_stalled();
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    value: String,
}

#[test]
fn doctors_fixes_inside_the_callers_transaction_leave_its_lock_timeout_as_it_was() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let lock_timeout = |conn: &mut PgConnection| {
        sql_query("SELECT current_setting('lock_timeout') AS value")
            .get_result::<Setting>(conn)
            .unwrap()
            .value
    };
    conn.transaction::<_, Error, _>(|conn| {
        conn.batch_execute("SET LOCAL lock_timeout = '7s'")?;
        machine_state::doctor::fix_exposures(conn)?;
        machine_state::doctor::undo_fixes(conn)?;
        assert_eq!(lock_timeout(conn), "7s");
        Ok(())
    })
    .unwrap();
}
