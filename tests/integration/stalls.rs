//! A stalled lock holder (a legacy writer or an operator's `psql` sitting in
//! an open transaction) never makes a transition wait unboundedly: after its
//! lock timeout it is refused with `Error::LockTimeout` naming the holder,
//! having written nothing, and the setting leaks nowhere.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Integer, Text};
use machine_state::{Action, AnyMachine, Blocker, Error, WritePath, find_operation};
use uuid::Uuid;

use crate::support::{TestDb, assert_consistent, idle_machine, snapshot};

pub(crate) const LIMIT: Duration = Duration::from_millis(300);

/// Longer than any limit here: past it, the transition waited unboundedly.
const HANG: Duration = Duration::from_secs(15);

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = Text)]
    value: String,
}

/// A session that locks `machine`'s row in `table` and sits idle in its
/// transaction; its backend pid.
pub(crate) fn stall(db: &TestDb, table: &str, machine: Uuid) -> (PgConnection, i32) {
    let mut holder = db.conn();
    let column = if table == "machines" {
        "id"
    } else {
        "machine_id"
    };
    let pid = sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut holder)
        .unwrap()
        .pid;
    holder
        .batch_execute(&format!(
            "BEGIN; UPDATE {table} SET updated_at = updated_at WHERE {column} = '{machine}'"
        ))
        .unwrap();
    (holder, pid)
}

/// Run `transition` on another thread; its result and how long it took, or
/// a panic if it is still waiting after [`HANG`] (then `release` ends the
/// stall first, so nothing is left blocked).
pub(crate) fn bounded<T: Send + 'static>(
    release: &mut PgConnection,
    transition: impl FnOnce() -> T + Send + 'static,
) -> (T, Duration) {
    let (sender, answer) = mpsc::channel();
    let started = Instant::now();
    let worker = thread::spawn(move || {
        let _ = sender.send(transition());
    });
    match answer.recv_timeout(HANG) {
        Ok(result) => {
            worker.join().unwrap();
            (result, started.elapsed())
        }
        Err(_) => {
            release.batch_execute("ROLLBACK").unwrap();
            let _ = worker.join();
            panic!("the transition waited more than {HANG:?} for the lock holder");
        }
    }
}

pub(crate) fn assert_names_holder(error: &Error, machine: Uuid, pid: i32, table: &str) {
    match error {
        Error::LockTimeout {
            machine_id,
            limit,
            blocker:
                Some(Blocker {
                    pid: held_by,
                    state,
                    query,
                }),
        } => {
            assert_eq!(*machine_id, machine);
            assert_eq!(*limit, LIMIT);
            assert_eq!(*held_by, pid);
            assert_eq!(state, "idle in transaction");
            assert!(query.contains(&format!("UPDATE {table}")), "{query}");
            let message = error.to_string();
            assert!(message.contains(&format!("backend {pid}")), "{message}");
            assert!(error.is_retryable());
        }
        other => panic!("expected a lock timeout naming backend {pid}, got {other:?}"),
    }
}

#[test]
fn a_transition_behind_a_stalled_lock_holder_is_refused_within_its_limit_naming_it() {
    // Either row may be the stalled one; on a pool connection (one
    // autocommit statement) and on a plain one (explicit transaction).
    refused_behind_stalled_holders(
        &TestDb::new(),
        &[
            ("machines", true),
            ("machine_state", true),
            ("machines", false),
            ("machine_state", false),
        ],
    );
}

/// For each `(table, pooled)`: a transition behind a session holding the
/// machine's row of `table` is refused within its limit naming the holder,
/// writes nothing, leaks no setting, and applies once the holder is gone.
pub(crate) fn refused_behind_stalled_holders(db: &TestDb, cases: &[(&str, bool)]) {
    let pool = db.pool();
    for &(table, pooled) in cases {
        let id = idle_machine(&mut db.conn());
        let (mut holder, pid) = stall(db, table, id);
        let before = snapshot(&mut db.conn());
        let operation = Uuid::new_v4();
        let conn = if pooled { None } else { Some(db.conn()) };
        let pool_conn = pooled.then(|| pool.get().unwrap());
        let ((result, conn, pool_conn), took) = bounded(&mut holder, move || {
            let mut conn = conn;
            let mut pool_conn = pool_conn;
            let target: &mut PgConnection = match (&mut conn, &mut pool_conn) {
                (Some(conn), _) => conn,
                (None, Some(pooled)) => pooled,
                (None, None) => unreachable!(),
            };
            let result = AnyMachine::load(target, id)
                .unwrap()
                .with_lock_timeout(LIMIT)
                .with_operation_id(operation)
                .perform(target, &Action::Start(Uuid::new_v4()))
                .map(|_| ())
                .map_err(|refused| refused.error);
            (result, conn, pool_conn)
        });
        let error = result.expect_err("refused");
        assert_names_holder(&error, id, pid, table);
        assert!(
            took >= LIMIT && took < LIMIT * 6,
            "{table}: refused after {took:?}"
        );
        // Nothing written, and the limit did not outlive the transition.
        assert_eq!(snapshot(&mut db.conn()), before);
        let mut conn = conn.or(pool_conn.map(|_| db.conn())).unwrap();
        let left: Value = sql_query("SELECT current_setting('lock_timeout') AS value")
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(left.value, "0");
        // Once the holder is gone, the same operation applies.
        holder.batch_execute("ROLLBACK").unwrap();
        let machine = AnyMachine::load(&mut conn, id).unwrap();
        machine
            .with_operation_id(operation)
            .perform(&mut conn, &Action::Start(Uuid::new_v4()))
            .unwrap();
        assert!(find_operation(&mut conn, operation).unwrap().is_some());
        assert_consistent(&mut conn, id);
    }
}

#[test]
fn the_sql_functions_give_up_on_a_stalled_lock_holder_after_their_own_limit() {
    let db = TestDb::new();
    let admin = &mut db.conn();
    // The migration gave every transition function a limit.
    let configured: Vec<Value> = sql_query(
        "SELECT p.proname || ' ' || array_to_string(p.proconfig, ',') AS value FROM pg_proc p \
         WHERE p.proname IN ('machine_state_transition', 'atomic_update_machine_state', \
         'atomic_complete_machine_state', 'atomic_error_machine_state', \
         'atomic_processing_machine_state') AND p.pronamespace = 'public'::regnamespace \
         ORDER BY 1",
    )
    .load(admin)
    .unwrap();
    assert_eq!(configured.len(), 5);
    for function in &configured {
        assert!(
            function.value.contains("lock_timeout=5s"),
            "{}",
            function.value
        );
    }
    // Shortened here, as an operator would with ALTER FUNCTION.
    admin
        .batch_execute(
            "ALTER FUNCTION atomic_processing_machine_state(uuid, uuid) SET lock_timeout = '300ms';
             ALTER FUNCTION machine_state_transition(uuid, text, text, uuid, text, uuid, text)
                 SET lock_timeout = '300ms';",
        )
        .unwrap();
    let id = idle_machine(admin);
    let (mut holder, pid) = stall(&db, "machines", id);
    let before = snapshot(admin);
    let url = db.url.clone();
    let (legacy, took) = bounded(&mut holder, move || {
        let conn = &mut PgConnection::establish(&url).unwrap();
        sql_query(format!(
            "SELECT atomic_processing_machine_state('{id}', '{}')::text AS value",
            Uuid::new_v4()
        ))
        .get_result::<Value>(conn)
        .map(|_| ())
        .map_err(|e| e.to_string())
    });
    let message = legacy.expect_err("refused");
    assert!(message.contains("lock timeout"), "{message}");
    assert!(took < LIMIT * 6, "refused after {took:?}");
    // The crate through the function: the same typed error as the statement.
    let url = db.url;
    let (rust, _) = bounded(&mut holder, move || {
        let conn = &mut PgConnection::establish(&url).unwrap();
        AnyMachine::load(conn, id)
            .unwrap()
            .with_write_path(WritePath::SqlFunction)
            .with_lock_timeout(LIMIT)
            .perform(conn, &Action::Start(Uuid::new_v4()))
            .map(|_| ())
            .map_err(|refused| refused.error)
    });
    assert_names_holder(&rust.expect_err("refused"), id, pid, "machines");
    assert_eq!(snapshot(admin), before);
    holder.batch_execute("ROLLBACK").unwrap();
}

#[test]
fn the_command_line_gives_up_after_its_lock_timeout_with_exit_code_1() {
    command_line_gives_up_after_its_lock_timeout(TestDb::new());
}

/// The command behind a stalled lock holder on `db`: exit code 1, naming
/// the holder, within its limit.
pub(crate) fn command_line_gives_up_after_its_lock_timeout(db: TestDb) {
    // Built (once) before the clock starts.
    let binary = crate::support::machine_state_binary();
    let id = idle_machine(&mut db.conn());
    let (mut holder, pid) = stall(&db, "machine_state", id);
    let url = db.url.clone();
    let (output, took) = bounded(&mut holder, move || {
        Command::new(binary)
            .env_remove("DATABASE_URL")
            .env_remove("MACHINE_STATE_LOCK_TIMEOUT")
            .current_dir(env!("CARGO_TARGET_TMPDIR"))
            .args(["--database-url", &url, "--lock-timeout", "300ms", "start"])
            .arg(id.to_string())
            .output()
            .unwrap()
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("backend {pid} (idle in transaction)")),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(5), "refused after {took:?}");
    holder.batch_execute("ROLLBACK").unwrap();
    assert_consistent(&mut db.conn(), id);
}
