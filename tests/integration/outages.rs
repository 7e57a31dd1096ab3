//! The server goes away and comes back: while it is down a transition fails
//! fast with a typed error, and once it accepts connections again a
//! transition on the same pool succeeds within half a second (not on r2d2's
//! reconnect backoff of 0.4, 1.2, 2.8, 6 s…).

use std::thread;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use machine_state::{Action, AnyMachine, EmbeddedPostgres, Error, Pool};
use uuid::Uuid;

use crate::support::idle_machine;

/// The promise: a transition issued once the server accepts connections
/// again succeeds within this.
const BACK_WITHIN: Duration = Duration::from_millis(500);

/// While the server is down a transition fails within the checkout timeout
/// (0.6 s), give or take the machine's load.
const FAILS_WITHIN: Duration = Duration::from_millis(1500);

/// One transition of `id` on a connection from `pool`, whatever its state.
fn transition(pool: &Pool, id: Uuid) -> Result<(), Error> {
    let conn = &mut pool.get()?;
    let machine = AnyMachine::load(conn, id)?;
    let action = match machine.state() {
        machine_state::State::Processing => Action::Complete,
        _ => Action::Start(Uuid::new_v4()),
    };
    machine
        .perform(conn, &action)
        .map(|_| ())
        .map_err(|refused| refused.error)
}

/// A server of its own with machines, and a pool with every connection made.
fn busy_pool() -> (EmbeddedPostgres, Pool, Vec<Uuid>) {
    let server = EmbeddedPostgres::start_temporary().unwrap();
    let url = server.url("postgres");
    let admin = &mut PgConnection::establish(&url).unwrap();
    machine_state::run_migrations(admin).unwrap();
    let machines: Vec<Uuid> = (0..4).map(|_| idle_machine(admin)).collect();
    let pool = machine_state::pool::pool_builder()
        .max_size(4)
        .build(machine_state::pool::Manager::new(&url).unwrap())
        .unwrap();
    thread::scope(|scope| {
        for &id in &machines {
            let pool = &pool;
            scope.spawn(move || {
                for _ in 0..10 {
                    transition(pool, id).unwrap();
                }
            });
        }
    });
    (server, pool, machines)
}

/// Down: every transition fails fast and typed. Then `bring_back`, and the
/// first transition must succeed within [`BACK_WITHIN`].
fn outage(server: &EmbeddedPostgres, pool: &Pool, id: Uuid, bring_back: impl FnOnce()) {
    for _ in 0..3 {
        let started = Instant::now();
        let result = transition(pool, id);
        let took = started.elapsed();
        match result {
            Err(Error::Pool(_) | Error::OutcomeUnknown { .. } | Error::Connection(_)) => {}
            // The load before the transition met a dead connection.
            Err(Error::Database(DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            ))) => {}
            other => panic!("while the server is down: {other:?}"),
        }
        assert!(took < FAILS_WITHIN, "a transition took {took:?} to fail");
    }
    bring_back();
    let back = Instant::now();
    let result = transition(pool, id);
    let took = back.elapsed();
    eprintln!("first transition after the server came back: {took:?}");
    result.unwrap_or_else(|e| panic!("the first transition after the outage failed: {e:?}"));
    assert!(took < BACK_WITHIN, "the first transition took {took:?}");
    server.stop().unwrap();
}

/// The server's processes (backends, background workers), as it lists them.
fn server_processes(server: &EmbeddedPostgres) -> Vec<i32> {
    #[derive(QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let conn = &mut PgConnection::establish(&server.url("postgres")).unwrap();
    diesel::sql_query("SELECT pid FROM pg_stat_activity")
        .load::<Pid>(conn)
        .unwrap()
        .into_iter()
        .map(|p| p.pid)
        .collect()
}

#[test]
fn after_a_killed_postmaster_comes_back_a_transition_succeeds_within_half_a_second() {
    let (server, pool, machines) = busy_pool();
    let processes = server_processes(&server);
    server.kill().unwrap();
    // A killed postmaster's backends notice its death on their own, within
    // milliseconds, or later on a loaded machine: until then a connection to
    // one of them still works. The server is down once they are gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes
        .iter()
        .any(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    {
        assert!(
            Instant::now() < deadline,
            "the killed server's backends linger"
        );
        thread::sleep(Duration::from_millis(10));
    }
    outage(&server, &pool, machines[0], || {
        server.start_again().unwrap();
    });
}

#[test]
fn after_an_immediate_restart_a_transition_succeeds_within_half_a_second() {
    let (server, pool, machines) = busy_pool();
    // The pool sits idle for a while, then the server restarts under it:
    // no transition saw it go, so its dead connections are all still there.
    thread::sleep(Duration::from_millis(300));
    server.restart().unwrap();
    let back = Instant::now();
    let result = transition(&pool, machines[1]);
    let took = back.elapsed();
    eprintln!("first transition after the restart: {took:?}");
    result.unwrap_or_else(|e| panic!("the first transition after the restart failed: {e:?}"));
    assert!(took < BACK_WITHIN, "the first transition took {took:?}");
    // And a restart during which transitions kept failing.
    server.stop_immediately().unwrap();
    outage(&server, &pool, machines[2], || {
        server.start_again().unwrap();
    });
}
