//! Lost requests and replies (a TCP proxy between client and server): the
//! outcome is unknown, the operation id resolves it, a retry applies once.

use std::ops::{Deref, DerefMut};

use diesel::prelude::*;
use machine_state::{Error, PooledConnection, find_operation, history};
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
