//! The legacy functions name no source state: they decide on the row they
//! have locked, so a change that committed while they waited for the lock is
//! where they start from, never a conflict (MS002). Callers that claim a
//! state (the typed API) keep compare-and-set. Deterministic: two
//! connections interleaved, the waiting call on a thread of its own.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Bool, Integer, Text};
use machine_state::history::history;
use machine_state::{Error, Idle, Machine};
use serde_json::Value;
use uuid::Uuid;

use crate::support::{TestDb, assert_consistent};

/// How long a call may take to start waiting for the lock, or to finish once
/// the lock is released.
const PATIENCE: Duration = Duration::from_secs(20);

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

#[derive(QueryableByName)]
struct Waiting {
    #[diesel(sql_type = Bool)]
    waiting: bool,
}

#[derive(QueryableByName)]
struct Json {
    #[diesel(sql_type = Text)]
    result: String,
}

/// A legacy caller as PostgREST runs it: its own session, one transaction
/// at `isolation` around the call, started on a thread once its backend pid
/// is known. Returns that pid and what the call answers: the JSON, or the
/// SQLSTATE it failed with.
fn legacy_call(
    db: &TestDb,
    isolation: &'static str,
    call: String,
) -> (i32, mpsc::Receiver<Result<Value, String>>) {
    let mut conn = db.conn();
    let pid = sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut conn)
        .unwrap()
        .pid;
    let (sender, answer) = mpsc::channel();
    thread::spawn(move || {
        conn.batch_execute(&format!("BEGIN ISOLATION LEVEL {isolation}"))
            .unwrap();
        // Under REPEATABLE READ the snapshot is taken here, before the wait,
        // as PostgREST's first statement would.
        let result =
            sql_query(format!("SELECT ({call})::text AS result")).get_result::<Json>(&mut conn);
        let outcome = match result {
            Ok(json) => {
                conn.batch_execute("COMMIT").unwrap();
                Ok(serde_json::from_str(&json.result).unwrap())
            }
            Err(error) => {
                conn.batch_execute("ROLLBACK").unwrap();
                Err(match error {
                    diesel::result::Error::DatabaseError(_, info) => info
                        .sqlstate()
                        .map_or_else(|| info.message().to_owned(), |s| s.as_str().to_owned()),
                    other => other.to_string(),
                })
            }
        };
        let _ = sender.send(outcome);
    });
    (pid, answer)
}

/// Wait until backend `pid` waits for a lock.
fn until_waiting_for_a_lock(observer: &mut PgConnection, pid: i32) {
    let started = Instant::now();
    loop {
        let waiting = sql_query(
            "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) AS waiting
             FROM pg_stat_activity WHERE pid = $1",
        )
        .bind::<Integer, _>(pid)
        .get_result::<Waiting>(observer)
        .unwrap()
        .waiting;
        if waiting {
            return;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "backend {pid} never waited for the lock"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn verbs(conn: &mut PgConnection, id: Uuid) -> Vec<String> {
    history(conn, id)
        .unwrap()
        .into_iter()
        .map(|entry| entry.verb.unwrap_or_default())
        .collect()
}

#[test]
fn a_legacy_start_that_waited_for_the_lock_starts_from_the_state_it_finds() {
    let db = TestDb::new();
    let observer = &mut db.conn();
    let idle = Machine::<Idle>::create(observer, Uuid::new_v4()).unwrap();
    let id = idle.id();
    let run = Uuid::new_v4();
    let taken_offline = crate::support::load_as::<Idle>(observer, id);

    // Another transaction takes the machine offline and holds the lock
    // while the legacy starter's call waits for it.
    let mut holder = db.conn();
    let answer = holder
        .build_transaction()
        .repeatable_read()
        .run(|conn| {
            taken_offline.take_offline(conn).unwrap();
            let (pid, answer) = legacy_call(
                &db,
                "READ COMMITTED",
                format!("atomic_processing_machine_state('{id}', '{run}')"),
            );
            until_waiting_for_a_lock(observer, pid);
            QueryResult::Ok(answer)
        })
        .unwrap();

    let started = answer
        .recv_timeout(PATIENCE)
        .unwrap()
        .unwrap_or_else(|sqlstate| {
            panic!("the legacy start failed with {sqlstate} instead of starting from `offline`")
        });
    assert_eq!(started["previous_state"], "offline");
    assert_eq!(started["new_state"], "processing");
    assert_eq!(started["process_id"], run.to_string());
    assert_eq!(started["verb"], "start");
    assert_eq!(verbs(observer, id), ["create", "take_offline", "start"]);
    assert_consistent(observer, id);

    // A caller that claims a state keeps compare-and-set: the typed idle
    // machine is stale, and its start is a conflict.
    let refused = idle.start(observer, Uuid::new_v4()).unwrap_err();
    assert!(
        matches!(refused.error, Error::Conflict { .. }),
        "{:?}",
        refused.error
    );
}

#[test]
fn concurrent_legacy_callers_get_no_conflict_they_did_not_ask_for() {
    let db = TestDb::new();
    let observer = &mut db.conn();
    let id = Machine::<Idle>::create(observer, Uuid::new_v4())
        .unwrap()
        .id();
    let run = Uuid::new_v4();

    // The custom wrapper takes the machine offline (legacy call 1, holding
    // the lock in its transaction) while the starter (legacy call 2) waits.
    let holder = &mut db.conn();
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT atomic_update_machine_state('{id}', 'offline');"
        ))
        .unwrap();
    let (pid, answer) = legacy_call(
        &db,
        "READ COMMITTED",
        format!("atomic_processing_machine_state('{id}', '{run}')"),
    );
    until_waiting_for_a_lock(observer, pid);
    holder.batch_execute("COMMIT").unwrap();
    let started = answer.recv_timeout(PATIENCE).unwrap().unwrap();
    assert_eq!(started["previous_state"], "offline");

    // The executor completes (call 1) while the stopper waits (call 2): the
    // run it would stop is over, which is illegal from `idle`, not a
    // conflict.
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT atomic_complete_machine_state('{id}');"
        ))
        .unwrap();
    let (pid, answer) = legacy_call(
        &db,
        "READ COMMITTED",
        format!("atomic_stop_machine_state('{id}')"),
    );
    until_waiting_for_a_lock(observer, pid);
    holder.batch_execute("COMMIT").unwrap();
    assert_eq!(answer.recv_timeout(PATIENCE).unwrap().unwrap_err(), "MS001");

    assert_eq!(
        verbs(observer, id),
        ["create", "take_offline", "start", "complete"]
    );
    assert_consistent(observer, id);
}

#[test]
fn under_repeatable_read_a_legacy_call_behind_a_newer_commit_is_a_retryable_40001() {
    let db = TestDb::new();
    let observer = &mut db.conn();
    let id = Machine::<Idle>::create(observer, Uuid::new_v4())
        .unwrap()
        .id();
    let call = format!(
        "atomic_processing_machine_state('{id}', '{}')",
        Uuid::new_v4()
    );

    let holder = &mut db.conn();
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT atomic_update_machine_state('{id}', 'offline');"
        ))
        .unwrap();
    let (pid, answer) = legacy_call(&db, "REPEATABLE READ", call.clone());
    until_waiting_for_a_lock(observer, pid);
    holder.batch_execute("COMMIT").unwrap();
    // Its snapshot predates the commit: it cannot lock the row it would
    // decide on. A serialization failure (retry), never MS002, nothing written.
    assert_eq!(answer.recv_timeout(PATIENCE).unwrap().unwrap_err(), "40001");
    assert_eq!(verbs(observer, id), ["create", "take_offline"]);

    // The retry decides on what it finds.
    let (_, answer) = legacy_call(&db, "REPEATABLE READ", call);
    let started = answer.recv_timeout(PATIENCE).unwrap().unwrap();
    assert_eq!(started["previous_state"], "offline");
    assert_eq!(verbs(observer, id), ["create", "take_offline", "start"]);
    assert_consistent(observer, id);
}
