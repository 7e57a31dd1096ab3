//! Migrating and rolling back a live legacy database: two legacy two-write
//! writers keep writing, and another session holds a write transaction open
//! on `machines` (a stalled executor between its two writes, an operator's
//! `psql`). No writer stalls more than 2 s; `migrate` and `rollback` apply
//! once the session ends, or stop within their budget naming it, with
//! nothing half-applied.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chrono::Utc;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Integer, Text};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use machine_state::migrations::{
    revert_last_migration_from, revert_last_migration_with, run_migrations_from,
    run_migrations_with,
};
use machine_state::testing::legacy;
use machine_state::{
    Error, Machine, MigrationOptions, Offline, revert_last_migration, run_migrations,
};
use uuid::Uuid;

use crate::adoption::legacy_database;
use crate::cli::bare;
use crate::support::{TestDb, schema_dump};

/// The longest a writer may stall while a migration waits.
const MAX_STALL: Duration = Duration::from_secs(2);

/// The fixture's machines the writers change (one each), and the one the
/// holder locks.
const WRITTEN: [&str; 2] = [
    "c0000000-0000-0000-0000-000000000003",
    "c0000000-0000-0000-0000-000000000004",
];
const HELD: &str = "c0000000-0000-0000-0000-000000000001";

/// The legacy two-write writers, every 20 ms, each on a machine of its own
/// and its own connection; each records the longest any one of its
/// statements took.
pub(crate) struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<(Duration, u32)>>,
}

impl Writers {
    pub(crate) fn start(db: &TestDb) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = WRITTEN
            .iter()
            .map(|id| Self::writer(db, id.parse().unwrap(), Arc::clone(&stop)))
            .collect();
        Writers { stop, threads }
    }

    fn writer(db: &TestDb, id: Uuid, flag: Arc<AtomicBool>) -> JoinHandle<(Duration, u32)> {
        let mut conn = db.conn();
        thread::spawn(move || {
            let (mut worst, mut writes) = (Duration::ZERO, 0);
            for state in ["offline", "idle"].iter().cycle() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let at = Utc::now();
                let began = Instant::now();
                legacy::write_machines(&mut conn, id, state, None, at).unwrap();
                worst = worst.max(began.elapsed());
                let began = Instant::now();
                legacy::write_machine_state(&mut conn, id, state, None, None, at).unwrap();
                worst = worst.max(began.elapsed());
                writes += 2;
                thread::sleep(Duration::from_millis(20));
            }
            (worst, writes)
        })
    }

    /// Stop, and return the worst stall of any writer, asserting that each
    /// writer's is under the limit.
    #[track_caller]
    pub(crate) fn assert_never_stalled(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        let mut worst_of_all = Duration::ZERO;
        for (n, thread) in self.threads.into_iter().enumerate() {
            let (worst, writes) = thread.join().unwrap();
            assert!(writes > 10, "writer {n} wrote only {writes} times");
            assert!(worst < MAX_STALL, "writer {n} stalled for {worst:?}");
            worst_of_all = worst_of_all.max(worst);
        }
        worst_of_all
    }
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// A session holding a write transaction open on `machines` (one row, not
/// the writer's), named `stalled-executor`; its pid.
pub(crate) fn hold_machines(db: &TestDb) -> (PgConnection, i32) {
    let mut conn = db.conn();
    let pid = sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut conn)
        .unwrap()
        .pid;
    conn.batch_execute(&format!(
        "SET application_name = 'stalled-executor';
         BEGIN;
         UPDATE machines SET updated_at = updated_at WHERE id = '{HELD}';"
    ))
    .unwrap();
    (conn, pid)
}

/// End the holder's transaction after `after`, from another thread.
fn release_after(mut holder: PgConnection, after: Duration) -> JoinHandle<()> {
    thread::spawn(move || {
        thread::sleep(after);
        holder.batch_execute("ROLLBACK").unwrap();
    })
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    version: String,
}

/// What diesel's bookkeeping holds: `None` when the table does not exist.
fn recorded_versions(conn: &mut PgConnection) -> Option<Vec<String>> {
    let exists = sql_query(
        "SELECT coalesce(to_regclass('__diesel_schema_migrations')::text, '') AS version",
    )
    .get_result::<Version>(conn)
    .unwrap();
    if exists.version.is_empty() {
        return None;
    }
    Some(
        sql_query("SELECT version FROM __diesel_schema_migrations ORDER BY version")
            .load::<Version>(conn)
            .unwrap()
            .into_iter()
            .map(|v| v.version)
            .collect(),
    )
}

/// Options for a test: a short lock timeout and `budget`.
fn options(budget: Duration) -> MigrationOptions {
    MigrationOptions::default()
        .with_lock_timeout(Duration::from_millis(300))
        .with_budget(budget)
}

#[test]
fn migrate_waits_out_an_open_transaction_without_stalling_writers() {
    let db = legacy_database();
    let writers = Writers::start(&db);
    thread::sleep(Duration::from_millis(200));
    let (holder, _) = hold_machines(&db);
    let released = release_after(holder, Duration::from_secs(3));

    let began = Instant::now();
    let applied = run_migrations_with(&mut db.conn(), &options(Duration::from_secs(30))).unwrap();
    let took = began.elapsed();
    released.join().unwrap();
    let worst = writers.assert_never_stalled();

    assert!(!applied.is_empty());
    assert!(
        took >= Duration::from_millis(2500),
        "migrate did not wait for the holder: {took:?}"
    );
    assert!(run_migrations(&mut db.conn()).unwrap().is_empty());
    eprintln!("migrate: applied after {took:?}; worst writer stall {worst:?}");
}

#[test]
fn migrate_gives_up_within_its_budget_naming_the_holder_and_changes_nothing() {
    let db = legacy_database();
    let conn = &mut db.conn();
    let schema_before = schema_dump(&db);
    let versions_before = recorded_versions(conn);
    let writers = Writers::start(&db);
    let (mut holder, pid) = hold_machines(&db);

    let budget = Duration::from_secs(3);
    let began = Instant::now();
    let error = run_migrations_with(conn, &options(budget)).unwrap_err();
    let took = began.elapsed();
    let worst = writers.assert_never_stalled();
    holder.batch_execute("ROLLBACK").unwrap();

    assert!(took <= budget + Duration::from_millis(500), "took {took:?}");
    match &error {
        Error::MigrationBlocked {
            migration,
            reverting: false,
            attempts,
            blockers,
            ..
        } => {
            assert!(migration.contains("create_machine_tables"), "{migration}");
            assert!(*attempts > 1, "{attempts} attempt(s)");
            let holder = blockers.iter().find(|b| b.pid == pid);
            let holder = holder.unwrap_or_else(|| panic!("{pid} not named: {error}"));
            assert_eq!(holder.application_name, "stalled-executor");
            assert_eq!(holder.state, "idle in transaction");
            assert!(holder.transaction_start.is_some());
        }
        other => panic!("expected MigrationBlocked, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "backend {pid} (`stalled-executor`, idle in transaction"
        )),
        "{message}"
    );
    assert_eq!(schema_dump(&db), schema_before, "half-applied");
    assert_eq!(recorded_versions(conn), versions_before);
    eprintln!("migrate: gave up after {took:?}; worst writer stall {worst:?}");
}

/// A migrated legacy database whose newest migration of ours is
/// `2026-12-01-300000` (its revert drops indexes of `machines`).
fn migrated_to_stuck_machines_index() -> TestDb {
    let db = legacy_database();
    let conn = &mut db.conn();
    run_migrations(conn).unwrap();
    while recorded_versions(conn)
        .unwrap()
        .last()
        .is_some_and(|newest| newest.as_str() > "20261201300000")
    {
        revert_last_migration(conn).unwrap();
    }
    db
}

#[test]
fn rollback_gives_up_within_its_budget_then_applies_once_the_holder_is_gone() {
    let db = migrated_to_stuck_machines_index();
    let conn = &mut db.conn();
    let schema_before = schema_dump(&db);
    let versions_before = recorded_versions(conn);
    let writers = Writers::start(&db);
    let (holder, pid) = hold_machines(&db);

    let budget = Duration::from_secs(2);
    let began = Instant::now();
    let error = revert_last_migration_with(conn, &options(budget)).unwrap_err();
    let took = began.elapsed();
    assert!(took <= budget + Duration::from_millis(500), "took {took:?}");
    match &error {
        Error::MigrationBlocked {
            reverting: true,
            blockers,
            ..
        } => assert!(blockers.iter().any(|b| b.pid == pid), "{error}"),
        other => panic!("expected MigrationBlocked, got {other:?}"),
    }
    assert_eq!(schema_dump(&db), schema_before, "half-reverted");
    assert_eq!(recorded_versions(conn), versions_before);

    let released = release_after(holder, Duration::from_secs(2));
    let began = Instant::now();
    let reverted = revert_last_migration_with(conn, &options(Duration::from_secs(30))).unwrap();
    let took = began.elapsed();
    released.join().unwrap();
    let worst = writers.assert_never_stalled();
    assert_eq!(reverted, "20261201300000");
    assert!(
        took >= Duration::from_millis(1500),
        "did not wait: {took:?}"
    );
    assert_ne!(schema_dump(&db), schema_before);
    eprintln!("rollback: applied after {took:?}; worst writer stall {worst:?}");
}

#[test]
fn the_cli_migrate_exits_with_1_naming_the_blocking_session() {
    let db = legacy_database();
    let (mut holder, pid) = hold_machines(&db);
    let output = bare()
        .args(["--database-url", &db.url, "migrate"])
        .args(["--migration-lock-timeout", "200ms", "--budget", "2s"])
        .output()
        .unwrap();
    holder.batch_execute("ROLLBACK").unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: applying migration `")
            && last.contains(&format!("blocked by backend {pid} (`stalled-executor`"))
            && last.contains("UPDATE machines SET updated_at"),
        "{stderr}"
    );
    assert!(
        stderr.contains("retry 1 of at most 9"),
        "no progress shown: {stderr}"
    );
    assert_eq!(recorded_versions(&mut db.conn()), None);
}

/// One migration outside a transaction: `CREATE INDEX CONCURRENTLY` on the
/// history.
const CONCURRENT: EmbeddedMigrations =
    embed_migrations!("tests/fixtures/concurrent_index_migrations");

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    count: i64,
}

/// How many indexes named `name` exist, and how many indexes are invalid.
fn indexes(conn: &mut PgConnection, name: &str) -> (i64, i64) {
    let count = |conn: &mut PgConnection, sql: String| {
        sql_query(sql).get_result::<Count>(conn).unwrap().count
    };
    (
        count(
            conn,
            format!("SELECT count(*) AS count FROM pg_class WHERE relname = '{name}'"),
        ),
        count(
            conn,
            "SELECT count(*) AS count FROM pg_index WHERE NOT indisvalid".to_owned(),
        ),
    )
}

#[test]
fn an_index_build_outside_a_transaction_waits_out_an_open_transaction_without_blocking_writers() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let mut writer_conn = db.conn();
    // A writer of the history: the crate's own transitions, back and forth.
    let writer = thread::spawn(move || {
        let conn = &mut writer_conn;
        let mut machine = Machine::<Offline>::create(conn, Uuid::new_v4()).unwrap();
        let (mut worst, mut writes) = (Duration::ZERO, 0);
        while !flag.load(Ordering::Relaxed) {
            let began = Instant::now();
            let idle = machine.bring_online(conn).unwrap();
            machine = idle.take_offline(conn).unwrap();
            worst = worst.max(began.elapsed());
            writes += 2;
            thread::sleep(Duration::from_millis(20));
        }
        (worst, writes)
    });
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE machine_state_transitions IN ROW EXCLUSIVE MODE;")
        .unwrap();
    let released = release_after(holder, Duration::from_secs(2));

    let began = Instant::now();
    let applied =
        run_migrations_from(conn, &CONCURRENT, &options(Duration::from_secs(30))).unwrap();
    let took = began.elapsed();
    released.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let (worst, writes) = writer.join().unwrap();

    assert_eq!(applied, ["20300201000000"]);
    assert!(
        took >= Duration::from_millis(1500),
        "did not wait: {took:?}"
    );
    assert!(writes > 10, "the writer wrote only {writes} times");
    assert!(worst < MAX_STALL, "a writer stalled for {worst:?}");
    assert_eq!(indexes(conn, "machine_state_transitions_time_idx"), (1, 0));
    eprintln!("concurrent index: applied after {took:?}; worst writer stall {worst:?}");

    let reverted = revert_last_migration_from(conn, &CONCURRENT, &MigrationOptions::default());
    assert_eq!(reverted.unwrap(), "20300201000000");
    assert_eq!(indexes(conn, "machine_state_transitions_time_idx"), (0, 0));
}

/// The tables that can be large: an index built on one of them inside a
/// transaction blocks its writers for the length of the build.
const LARGE_TABLES: [&str; 1] = ["machine_state_transitions"];

/// The statements of a migration file, lower-case, comments and extra
/// whitespace removed.
fn statements(sql: &str) -> Vec<String> {
    let without_comments: String = sql
        .lines()
        .map(|line| line.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ");
    without_comments
        .split(';')
        .map(|s| {
            s.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The table an index-building statement builds on, if it is one: `CREATE
/// [UNIQUE] INDEX ... ON [ONLY] table`, or `ALTER TABLE table ADD ...
/// UNIQUE/PRIMARY KEY` (without `USING INDEX`).
fn index_build(statement: &str) -> Option<(String, bool)> {
    let words: Vec<&str> = statement.split(' ').collect();
    if statement.starts_with("create index") || statement.starts_with("create unique index") {
        let on = words.iter().position(|w| *w == "on")?;
        let table = match words.get(on + 1)? {
            &"only" => words.get(on + 2)?,
            table => table,
        };
        let concurrently = words.contains(&"concurrently");
        return Some((table.trim_start_matches("public.").to_owned(), concurrently));
    }
    if statement.starts_with("alter table")
        && (statement.contains(" unique") || statement.contains(" primary key"))
        && !statement.contains("using index")
    {
        let table = words
            .iter()
            .skip(2)
            .find(|w| !["only", "if", "exists"].contains(w))?;
        return Some((table.trim_start_matches("public.").to_owned(), false));
    }
    None
}

#[test]
fn no_migration_builds_an_index_on_a_large_table_inside_a_transaction() {
    let folders = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap();
    let mut checked = 0;
    for folder in folders
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_dir())
    {
        let outside_transaction = std::fs::read_to_string(folder.join("metadata.toml"))
            .is_ok_and(|toml| toml.replace(' ', "").contains("run_in_transaction=false"));
        for file in ["up.sql", "down.sql"] {
            let sql = std::fs::read_to_string(folder.join(file)).unwrap();
            let statements = statements(&sql);
            for statement in &statements {
                let Some((table, concurrently)) = index_build(statement) else {
                    continue;
                };
                checked += 1;
                if !LARGE_TABLES.contains(&table.as_str()) {
                    continue;
                }
                let created_here = statements.iter().any(|s| {
                    s.starts_with(&format!("create table {table} "))
                        || s.starts_with(&format!("create table if not exists {table} "))
                });
                assert!(
                    created_here || (concurrently && outside_transaction),
                    "{}/{file} builds an index on `{table}` inside a transaction: writers of \
                     the history would wait for the whole build. Build it CONCURRENTLY in a \
                     migration of its own with `run_in_transaction = false` in its \
                     metadata.toml: `{statement}`",
                    folder.display()
                );
            }
        }
    }
    assert!(
        checked >= 4,
        "found only {checked} index builds: is the parser blind?"
    );
}

#[test]
fn the_cli_rollback_exits_with_1_naming_the_blocking_session() {
    let db = migrated_to_stuck_machines_index();
    let versions_before = recorded_versions(&mut db.conn());
    let (mut holder, pid) = hold_machines(&db);
    let output = bare()
        .args(["--database-url", &db.url, "rollback"])
        .args(["--migration-lock-timeout", "200ms", "--budget", "1s"])
        .output()
        .unwrap();
    holder.batch_execute("ROLLBACK").unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: reverting migration `2026-12-01-300000_stuck_machines_index`")
            && last.contains(&format!("blocked by backend {pid} (`stalled-executor`")),
        "{stderr}"
    );
    assert_eq!(recorded_versions(&mut db.conn()), versions_before);
}
