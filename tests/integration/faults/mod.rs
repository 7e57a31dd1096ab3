//! Faults at the worst moments: a backend killed between the two table
//! writes, a COMMIT whose reply is lost (or that never arrives), forced
//! serialization failures and deadlocks, an immediate server restart under
//! load. Each ends with the same checks as the concurrency harness.

pub(crate) mod forced;
mod killed;
mod lost;
mod restart;
mod transaction;

use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::Integer;
use machine_state::history::history;
use machine_state::{AnyMachine, Idle, Machine};
use uuid::Uuid;

use crate::support::TestDb;
use crate::support::harness::leftovers;

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
