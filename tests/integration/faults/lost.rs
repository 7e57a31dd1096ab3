//! Lost requests and replies (a TCP proxy between client and server): the
//! outcome is unknown, the operation id resolves it, a retry applies once.

use std::ops::{Deref, DerefMut};

use diesel::prelude::*;
use machine_state::history::history;
use machine_state::{Error, PooledConnection, find_operation};
use uuid::Uuid;

use crate::support::harness::describe;
use crate::support::proxy::{At, Fault, Proxy};
use crate::support::{TestDb, assert_consistent, idle_machine, server};

use super::*;

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
    let pool = machine_state::pool::pool_builder()
        .max_size(1)
        .build(machine_state::pool::Manager::new(&url).unwrap())
        .unwrap();
    let connect = || match at {
        At::Statement | At::StatementWith(_) => Client::Pooled(pool.get().unwrap()),
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
            operation_ids: reported,
            ..
        } => assert_eq!(*reported, [operation]),
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

/// The operation id a failed command's error line names (``operation `…` ``).
fn operation_named_in(stderr: &str) -> Uuid {
    let (_, rest) = stderr
        .split_once("operation `")
        .unwrap_or_else(|| panic!("no operation id in: {stderr}"));
    rest[..36].parse().unwrap()
}

/// `machine-state start` through the proxy with `fault` on the transition's
/// statement, as a script would drive it: exit code 3 naming the operation,
/// the log saying the outcome is unknown, `operation` resolving it, and a
/// retry with `--operation-id` applying at most once.
fn the_command_line_under(fault: Fault) {
    let db = TestDb::new();
    let admin = &mut db.conn();
    let proxy = Proxy::start(server().socket_dir().join(".s.PGSQL.5432"));
    let url = proxy.url(&db.name);
    let id = idle_machine(admin);
    let run = Uuid::new_v4();
    let cli = || {
        let mut command = crate::cli::bare();
        command.arg("--database-url").arg(&url);
        command
    };
    let start = [
        "start".to_owned(),
        id.to_string(),
        "--process".to_owned(),
        run.to_string(),
    ];

    proxy.arm(At::StatementWith("WITH machine_row AS"), fault);
    let output = cli().arg("-v").args(&start).output().unwrap();
    assert!(proxy.fired(), "the fault was not injected");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    let operation = operation_named_in(&stderr);
    // The log line says the outcome is unknown, with the operation id; never
    // that it was refused or not applied.
    let log = stderr
        .lines()
        .find(|line| line.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning logged: {stderr}"));
    assert!(log.contains("outcome unknown"), "{log}");
    assert!(log.contains("outcome=\"unknown_outcome\""), "{log}");
    assert!(log.contains(&format!("operation_id={operation}")), "{log}");
    assert!(
        !stderr.contains("not applied") && !stderr.contains("refused"),
        "{stderr}"
    );
    let error = stderr.lines().last().unwrap();
    assert!(error.starts_with("error: "), "{stderr}");
    assert!(
        error.contains(&format!("--operation-id {operation}")),
        "{error}"
    );

    // Resolve it by the operation id: never guess.
    let looked_up = cli()
        .args(["operation", &operation.to_string()])
        .output()
        .unwrap();
    let answer = String::from_utf8(looked_up.stdout).unwrap();
    match fault {
        Fault::LoseReply => {
            assert_eq!(looked_up.status.code(), Some(0), "{answer}");
            assert!(answer.contains("applied: start of machine"), "{answer}");
        }
        Fault::DropRequest => {
            assert_eq!(looked_up.status.code(), Some(1), "{answer}");
            assert!(answer.contains("did not apply"), "{answer}");
        }
    }

    // Retry at most once, with the same operation id: applied once in all.
    let retried = cli()
        .args(&start)
        .args(["--operation-id", &operation.to_string()])
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&retried.stdout).into_owned();
    assert_eq!(retried.status.code(), Some(0), "{answer}{retried:?}");
    assert!(
        answer.starts_with(&format!("{id}: idle -> processing")),
        "{answer}"
    );
    assert_eq!(
        answer.contains("already applied"),
        fault == Fault::LoseReply,
        "{answer}"
    );
    assert_eq!(times_in_history(admin, id, operation), 1);
    assert_eq!(
        history(admin, id).unwrap().len(),
        3,
        "create, online, start"
    );
    assert_consistent(admin, id);

    // Refused and unreachable stay apart: 1 and 2.
    let refused = cli().args(&start).output().unwrap();
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    drop(proxy);
    let unreachable = cli().args(["complete", &id.to_string()]).output().unwrap();
    assert_eq!(unreachable.status.code(), Some(2), "{unreachable:?}");
    assert_no_leftovers(admin, &db);
}

#[test]
fn the_command_line_exits_3_on_a_lost_reply_and_resolves_it_by_operation_id() {
    the_command_line_under(Fault::LoseReply);
}

#[test]
fn the_command_line_exits_3_on_a_lost_request_and_its_retry_applies_once() {
    the_command_line_under(Fault::DropRequest);
}
