//! The database enforces I1–I4 at COMMIT once an operator turns enforcement
//! on (migration 000004): every writer of this crate passes, the legacy
//! two-write pattern is refused at its first write, and nothing is
//! half-applied.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Nullable, Text, Uuid as SqlUuid};
use machine_state::audit::{audit, repair};
use machine_state::{Idle, Machine, Offline, RecipeRun, RetryPolicy, WritePath, transaction};
use uuid::Uuid;

use crate::support::{TestDb, assert_consistent, invariants_enforced, snapshot, sqlstate_of};
use crate::transitions::walk_every_edge;

fn enforce(conn: &mut PgConnection) {
    conn.batch_execute("SELECT machine_state_enforce_invariants()")
        .unwrap();
    assert!(invariants_enforced(conn));
}

fn idle_machine(conn: &mut PgConnection) -> Uuid {
    Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap().id()
}

/// The legacy starter's two writes, one statement each (autocommit).
fn legacy_start(id: Uuid, run: Uuid) -> [String; 2] {
    [
        format!(
            "UPDATE machines SET status = 'processing', current_process_id = '{run}',
                                 updated_at = now()
             WHERE id = '{id}'"
        ),
        format!(
            "UPDATE machine_state SET current_state = 'processing', process_id = '{run}',
                                      state_since = now(), updated_at = now()
             WHERE machine_id = '{id}'"
        ),
    ]
}

#[test]
fn enforcement_is_installed_off_so_a_fresh_database_still_takes_the_legacy_two_write() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    assert!(!invariants_enforced(conn));
    let id = idle_machine(conn);
    let [first, _] = legacy_start(id, Uuid::new_v4());
    conn.batch_execute(&first).unwrap();
    assert!(!audit(conn).unwrap().is_consistent(), "the pair diverged");
}

#[test]
fn enforcement_is_refused_while_a_pair_is_diverged_and_stays_off() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = idle_machine(conn);
    let [first, _] = legacy_start(id, Uuid::new_v4());
    conn.batch_execute(&first).unwrap();

    let before = snapshot(conn);
    let refused = conn
        .batch_execute("SELECT machine_state_enforce_invariants()")
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("cannot enforce the pair invariants: 1 of 1 machines are diverged"),
        "{refused}"
    );
    assert_eq!(
        sqlstate_of(conn, "SELECT machine_state_enforce_invariants()"),
        "MS008"
    );
    assert!(!invariants_enforced(conn));
    assert_eq!(snapshot(conn), before);

    // Once repaired, it goes on; but never from a snapshot older than its
    // lock on the tables.
    repair(conn, false).unwrap();
    conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    assert_eq!(
        sqlstate_of(conn, "SELECT machine_state_enforce_invariants()"),
        "MS008"
    );
    conn.batch_execute("ROLLBACK").unwrap();
    enforce(conn);
}

#[test]
fn with_enforcement_on_the_legacy_two_write_is_refused_at_its_first_write_and_nothing_is_half_applied()
 {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = idle_machine(conn);
    enforce(conn);
    let before = snapshot(conn);

    let [first, second] = legacy_start(id, Uuid::new_v4());
    let refused = conn.batch_execute(&first).unwrap_err().to_string();
    assert!(
        refused.contains(&format!(
            "machine `{id}` would be left inconsistent: I1: `machines.status` is `processing`, \
             `machine_state.current_state` is `idle`"
        )),
        "{refused}"
    );
    assert_eq!(snapshot(conn), before, "the first write is rolled back");
    assert_eq!(sqlstate_of(conn, &first), "MS007");
    assert_eq!(sqlstate_of(conn, &second), "MS007");
    // The legacy provisioning (a machine without its state row), a lost state
    // row, a failure mode outside `error`, an unknown state, and an error
    // without a description are refused too.
    for statement in [
        format!(
            "INSERT INTO machines (id, status) VALUES ('{}', 'idle')",
            Uuid::new_v4()
        ),
        format!("DELETE FROM machine_state WHERE machine_id = '{id}'"),
        format!("UPDATE machine_state SET is_failure_mode = true WHERE machine_id = '{id}'"),
        format!("UPDATE machines SET status = 'maintenance' WHERE id = '{id}'"),
        // Both rows in one statement, agreeing, but an error without a
        // description (only Unicode whitespace).
        format!(
            "WITH m AS (UPDATE machines SET status = 'error' WHERE id = '{id}')
             UPDATE machine_state SET current_state = 'error', is_failure_mode = true,
                                      failure_description = U&'\\3000\\00A0'
             WHERE machine_id = '{id}'"
        ),
    ] {
        assert_eq!(sqlstate_of(conn, &statement), "MS007", "{statement}");
    }
    assert_eq!(snapshot(conn), before);

    // The check is deferred to COMMIT: both writes in one transaction pass.
    conn.batch_execute(&format!("BEGIN; {first}; {second}; COMMIT"))
        .unwrap();
    assert_eq!(crate::support::machines_status(conn, id), "processing");
    assert!(audit(conn).unwrap().is_consistent());
}

#[test]
fn with_enforcement_on_every_legal_transition_commits_through_every_write_path() {
    let db = TestDb::new();
    let pool = db.pool();
    let conn = &mut db.conn();
    enforce(conn);

    // The crate: both write paths, in autocommit on a pool connection and in
    // explicit transactions on a plain one.
    for path in [WritePath::Statement, WritePath::SqlFunction] {
        walk_every_edge(&mut pool.get().unwrap(), path);
        walk_every_edge(conn, path);
    }

    // Several transitions and the caller's own writes in one transaction.
    let id = idle_machine(conn);
    let run = RecipeRun::on(id).run(Uuid::new_v4());
    transaction(conn, &RetryPolicy::default(), |conn| {
        run.start(conn, Uuid::new_v4())?;
        run.complete(conn, Uuid::new_v4())?;
        Ok::<_, machine_state::Error>(())
    })
    .unwrap();
    assert_consistent(conn, id);

    // The SQL function, every edge, and the legacy RPC names.
    let id = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .id();
    let (first, second, third) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for (from, to, process, description) in [
        ("offline", "idle", None, None),
        ("idle", "offline", None, None),
        ("offline", "processing", Some(first), None),
        ("processing", "idle", Some(first), None),
        ("idle", "processing", Some(second), None),
        ("processing", "error", Some(second), Some("pump tripped")),
        ("error", "idle", None, None),
        ("idle", "processing", Some(third), None),
        ("processing", "error", Some(third), Some("heater fault")),
        ("error", "offline", None, None),
    ] {
        sql_query("SELECT machine_state_transition($1, $2, $3, $4, $5)")
            .bind::<SqlUuid, _>(id)
            .bind::<Text, _>(from)
            .bind::<Text, _>(to)
            .bind::<Nullable<SqlUuid>, _>(process)
            .bind::<Nullable<Text>, _>(description)
            .execute(conn)
            .unwrap();
        assert_consistent(conn, id);
    }
    conn.batch_execute(&format!(
        "SELECT atomic_update_machine_state('{id}', 'idle');
         SELECT atomic_processing_machine_state('{id}', '{}');
         SELECT atomic_complete_machine_state('{id}');
         SELECT atomic_processing_machine_state('{id}', '{}');
         SELECT atomic_error_machine_state('{id}', 'chamber breach');
         SELECT atomic_update_machine_state('{id}', 'offline');",
        Uuid::new_v4(),
        Uuid::new_v4()
    ))
    .unwrap();
    assert_consistent(conn, id);

    // Repair rewrites both rows: a pair whose only fault is its timestamps
    // (I5, which the database does not enforce) is realigned.
    let stale = idle_machine(conn);
    conn.batch_execute(&format!(
        "UPDATE machine_state SET state_since = now() - interval '1 hour' WHERE machine_id = '{stale}'"
    ))
    .unwrap();
    assert_eq!(audit(conn).unwrap().diverged.len(), 1);
    assert!(repair(conn, false).unwrap().iter().all(|r| r.applied));
    assert!(audit(conn).unwrap().is_consistent());
    assert!(invariants_enforced(conn));
}

#[test]
fn relaxing_enforcement_lets_the_legacy_writers_through_again() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = idle_machine(conn);
    enforce(conn);
    conn.batch_execute("SELECT machine_state_relax_invariants()")
        .unwrap();
    assert!(!invariants_enforced(conn));
    let [first, _] = legacy_start(id, Uuid::new_v4());
    conn.batch_execute(&first).unwrap();
    assert!(!audit(conn).unwrap().is_consistent());
}

#[test]
fn enforcing_waits_for_a_writer_in_flight_and_refuses_the_divergence_it_commits() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = idle_machine(conn);

    // A legacy writer has made its first write and not committed yet.
    let writer = &mut db.conn();
    let [first, _] = legacy_start(id, Uuid::new_v4());
    writer.batch_execute(&format!("BEGIN; {first}")).unwrap();

    // The operator enables enforcement meanwhile: it must wait for the writer
    // (a check that ran now would see a consistent pair, and the writer's
    // commit, queued before the triggers were on, would go unchecked).
    let url = db.url;
    let operator = std::thread::spawn(move || {
        let conn = &mut PgConnection::establish(&url).unwrap();
        sqlstate_of(conn, "SELECT machine_state_enforce_invariants()")
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while count_waiting_on_a_lock(conn) == 0 {
        assert!(
            !operator.is_finished() && std::time::Instant::now() < deadline,
            "enforcing did not wait for the writer in flight"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    writer.batch_execute("COMMIT").unwrap();

    assert_eq!(operator.join().unwrap(), "MS008");
    assert!(!invariants_enforced(conn));
}

fn count_waiting_on_a_lock(conn: &mut PgConnection) -> i64 {
    #[derive(QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .get_result::<Waiting>(conn)
    .unwrap()
    .n
}
