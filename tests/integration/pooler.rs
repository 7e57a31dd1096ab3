//! Through a real PgBouncer 1.18 in transaction mode (`support::pgbouncer`,
//! two server connections per database and user, so clients share them):
//! the crate, the command line and the legacy SQL functions work, the
//! concurrent schedules hold, and nothing the crate does reaches the other
//! clients of the pooler.

use std::sync::{Mutex, OnceLock};
use std::thread;

use assert_cmd::Command;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Text, Uuid as SqlUuid};
use machine_state::pool::{ConnectionMode, Manager};
use machine_state::{Action, AnyMachine, Pool};
use uuid::Uuid;

use crate::support::harness::{
    CaseReport, Chaos, CrateWriter, HarnessDb, MAX_WORKERS, property, run_case, schedules,
};
use crate::support::pgbouncer::PgBouncer;
use crate::support::{TestDb, assert_consistent, idle_machine, pgbouncer, server};

/// A login role whose sessions default to REPEATABLE READ (`ALTER ROLE …
/// SET`, as `sql/roles.sql` offers), created once per test binary.
fn repeatable_read_role() -> &'static str {
    static ROLE: OnceLock<String> = OnceLock::new();
    ROLE.get_or_init(|| {
        let role = format!("ms_rr_{}", std::process::id());
        let admin = &mut PgConnection::establish(&server().url("postgres")).unwrap();
        admin
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN SUPERUSER;
                 ALTER ROLE {role} SET default_transaction_isolation = 'repeatable read';"
            ))
            .unwrap();
        role
    })
}

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = Text)]
    value: String,
}

fn setting(conn: &mut PgConnection, name: &str) -> String {
    sql_query(format!("SELECT current_setting('{name}') AS value"))
        .get_result::<Value>(conn)
        .unwrap()
        .value
}

/// A pool of `size` through the pooler, in pooler mode, as `user`.
fn pooler_pool(bouncer: &PgBouncer, user: &str, db: &TestDb, size: u32) -> Pool {
    let manager = Manager::new(&bouncer.url_as(user, &db.name))
        .unwrap()
        .mode(ConnectionMode::TransactionPooler);
    machine_state::pool::pool_builder()
        .max_size(size)
        .build(manager)
        .unwrap()
}

/// Run `rounds` of every transition on `machines` from one thread each.
fn cycle(pool: &Pool, machines: &[Uuid], rounds: usize) {
    thread::scope(|scope| {
        for &id in machines {
            scope.spawn(move || {
                let conn = &mut pool.get().unwrap();
                for _ in 0..rounds {
                    for action in [
                        Action::Start(Uuid::new_v4()),
                        Action::Complete,
                        Action::Start(Uuid::new_v4()),
                        Action::Fail("heater".into()),
                        Action::Reset,
                        Action::TakeOffline,
                        Action::BringOnline,
                    ] {
                        AnyMachine::load(conn, id)
                            .unwrap()
                            .perform(conn, &action)
                            .unwrap_or_else(|e| panic!("{action:?}: {e}"));
                    }
                }
            });
        }
    });
}

#[test]
fn nothing_the_crate_does_through_the_pooler_reaches_its_other_clients() {
    let db = TestDb::new();
    let bouncer = pgbouncer(&[repeatable_read_role()]);
    let admin = &mut db.conn();
    let machines: Vec<Uuid> = (0..4).map(|_| idle_machine(admin)).collect();
    // Both ways through the pooler: a role that defaults to REPEATABLE READ
    // (one autocommit statement), and one that does not (explicit
    // transactions); the URL switch for the second.
    let rr = pooler_pool(&bouncer, repeatable_read_role(), &db, 4);
    cycle(&rr, &machines, 3);
    let switched = machine_state::pool(&bouncer.crate_url(&db.name)).unwrap();
    cycle(&switched, &machines, 3);
    for &id in &machines {
        assert_consistent(admin, id);
    }
    // Every transition ran REPEATABLE READ, the first half by the role's
    // default (in autocommit), the rest in explicit transactions.
    let levels: Vec<Value> = sql_query(
        "SELECT DISTINCT isolation_level AS value FROM machine_state_transitions \
         WHERE kind = 'transition'",
    )
    .load(admin)
    .unwrap();
    let levels: Vec<&str> = levels.iter().map(|l| l.value.as_str()).collect();
    assert_eq!(levels, ["repeatable read"]);
    drop((rr, switched));

    // Plain clients of the same pooler, as `postgres` (whose server
    // connections the crate's second pool used): the server's defaults,
    // no statement left prepared.
    for _ in 0..8 {
        let plain = &mut PgConnection::establish(&bouncer.url(&db.name)).unwrap();
        assert_eq!(
            setting(plain, "default_transaction_isolation"),
            "read committed"
        );
        assert_eq!(setting(plain, "transaction_isolation"), "read committed");
        assert_eq!(setting(plain, "lock_timeout"), "0");
        let prepared: Vec<Value> = sql_query("SELECT name AS value FROM pg_prepared_statements")
            .load(plain)
            .unwrap();
        assert!(
            prepared.is_empty(),
            "statements left prepared: {}",
            prepared.len()
        );
    }

    // The control: the check sees a leak when there is one. A client's
    // session `SET` (what the crate used to run) reaches later clients,
    // since two server connections serve them all.
    let leaky = &mut PgConnection::establish(&bouncer.url(&db.name)).unwrap();
    leaky
        .batch_execute("SET default_transaction_isolation = 'serializable'")
        .unwrap();
    let leaked = (0..8)
        .filter(|_| {
            let plain = &mut PgConnection::establish(&bouncer.url(&db.name)).unwrap();
            setting(plain, "transaction_isolation") == "serializable"
        })
        .count();
    assert!(
        leaked > 0,
        "the control leaked nowhere: the pooler does not share connections"
    );
}

#[test]
fn a_direct_connection_is_repeatable_read_by_its_startup_option_even_after_reconnecting() {
    let db = TestDb::new();
    let pool = machine_state::pool::pool_builder()
        .max_size(1)
        .build(Manager::new(&db.url).unwrap())
        .unwrap();
    let source = |conn: &mut PgConnection| {
        sql_query(
            "SELECT setting || ' from ' || source AS value FROM pg_settings \
             WHERE name = 'default_transaction_isolation'",
        )
        .get_result::<Value>(conn)
        .unwrap()
        .value
    };
    let pid = |conn: &mut PgConnection| {
        sql_query("SELECT pg_backend_pid()::text AS value")
            .get_result::<Value>(conn)
            .unwrap()
            .value
    };
    let first = {
        let conn = &mut pool.get().unwrap();
        // `client`: the startup packet's options, not a `SET` (`session`).
        assert_eq!(source(conn), "repeatable read from client");
        pid(conn)
    };
    // The backend goes away; the pool's next connection is made the same way.
    db.conn()
        .batch_execute(&format!("SELECT pg_terminate_backend({first})"))
        .unwrap();
    thread::sleep(std::time::Duration::from_millis(200));
    let conn = &mut pool.get().unwrap();
    assert_ne!(pid(conn), first);
    assert_eq!(source(conn), "repeatable read from client");
}

#[test]
fn a_direct_url_pointed_at_the_pooler_is_refused_with_a_hint() {
    let db = TestDb::new();
    let bouncer = pgbouncer(&[]);
    let Err(error) = machine_state::connect(&bouncer.url(&db.name)) else {
        panic!("the pooler accepted a startup option");
    };
    // The cause is in the message itself.
    let message = error.to_string();
    assert!(
        message.contains("machine_state_pooler=transaction"),
        "{message}"
    );
}

/// (transactions, statements) the pooler counted for `database` so far.
fn pooler_stats(bouncer: &PgBouncer, database: &str) -> (u64, u64) {
    bouncer
        .stats(&server().bin_dir().join("psql"), database)
        .unwrap()
}

#[test]
fn an_applied_transition_through_the_pooler_is_one_statement_where_the_role_defaults_to_repeatable_read()
 {
    let db = TestDb::new();
    let bouncer = pgbouncer(&[repeatable_read_role()]);
    let admin = &mut db.conn();
    let id = idle_machine(admin);
    const N: u64 = 20;
    let mut per_transition = Vec::new();
    for user in [repeatable_read_role(), "postgres"] {
        let pool = pooler_pool(&bouncer, user, &db, 1);
        let conn = &mut pool.get().unwrap();
        let mut machine = AnyMachine::load(conn, id).unwrap();
        let before = pooler_stats(&bouncer, &db.name);
        for n in 0..N {
            let action = if n % 2 == 0 {
                Action::Start(Uuid::new_v4())
            } else {
                Action::Complete
            };
            machine = machine.perform(conn, &action).unwrap();
        }
        let after = pooler_stats(&bouncer, &db.name);
        per_transition.push((
            (after.0 - before.0) as f64 / N as f64,
            (after.1 - before.1) as f64 / N as f64,
        ));
    }
    eprintln!("through the pooler, (transactions, statements) per transition: {per_transition:?}");
    // The role's default: one autocommit statement, one round trip.
    assert_eq!(per_transition[0], (1.0, 1.0));
    // Otherwise the statement finds READ COMMITTED, writes nothing, and
    // runs again in BEGIN ISOLATION LEVEL REPEATABLE READ … COMMIT.
    assert_eq!(per_transition[1].1, 4.0);
    assert_consistent(admin, id);
}

#[test]
fn the_concurrent_schedules_hold_through_a_transaction_pooler() {
    let bouncer = pgbouncer(&[repeatable_read_role()]);
    let db = TestDb::new();
    let rr = pooler_pool(&bouncer, repeatable_read_role(), &db, MAX_WORKERS as u32);
    let rc = pooler_pool(&bouncer, "postgres", &db, MAX_WORKERS as u32);
    let harness = HarnessDb::with_pools(db, rr, rc);
    let writer = CrateWriter::default();
    let diverged = Mutex::new(0);
    property(
        "the_concurrent_schedules_hold_through_a_transaction_pooler",
        12,
        schedules(),
        |schedule| {
            let report: CaseReport = run_case(&harness, &writer, Chaos::None, &schedule);
            *diverged.lock().unwrap() += report.diverged;
            report.into_result()
        },
    );
    assert_eq!(*diverged.lock().unwrap(), 0);
    let log = bouncer.log();
    assert!(!log.contains("prepared statement"), "{log}");
}

#[test]
fn the_legacy_sql_functions_work_through_the_pooler_and_record_the_servers_isolation() {
    let db = TestDb::new();
    let bouncer = pgbouncer(&[]);
    let admin = &mut db.conn();
    let machines: Vec<Uuid> = (0..3).map(|_| idle_machine(admin)).collect();
    let created: Value = sql_query("SELECT max(id)::text AS value FROM machine_state_transitions")
        .get_result(admin)
        .unwrap();
    // The legacy wrappers' calls, from plain clients (as PostgREST or psycopg
    // would), concurrently, with the crate's pool on the same pooler.
    let crate_pool = machine_state::pool(&bouncer.crate_url(&db.name)).unwrap();
    thread::scope(|scope| {
        for &id in &machines {
            let url = bouncer.url(&db.name);
            scope.spawn(move || {
                let conn = &mut PgConnection::establish(&url).unwrap();
                for _ in 0..10 {
                    let process = Uuid::new_v4();
                    sql_query("SELECT atomic_processing_machine_state($1, $2)::text AS value")
                        .bind::<SqlUuid, _>(id)
                        .bind::<SqlUuid, _>(process)
                        .get_result::<Value>(conn)
                        .unwrap();
                    sql_query("SELECT atomic_error_machine_state($1, 'heater')::text AS value")
                        .bind::<SqlUuid, _>(id)
                        .get_result::<Value>(conn)
                        .unwrap();
                    sql_query("SELECT atomic_update_machine_state($1, 'idle')::text AS value")
                        .bind::<SqlUuid, _>(id)
                        .get_result::<Value>(conn)
                        .unwrap();
                    sql_query("SELECT atomic_processing_machine_state($1, $2)::text AS value")
                        .bind::<SqlUuid, _>(id)
                        .bind::<SqlUuid, _>(Uuid::new_v4())
                        .get_result::<Value>(conn)
                        .unwrap();
                    sql_query("SELECT atomic_complete_machine_state($1)::text AS value")
                        .bind::<SqlUuid, _>(id)
                        .get_result::<Value>(conn)
                        .unwrap();
                }
            });
        }
        let crate_pool = &crate_pool;
        scope.spawn(move || {
            let conn = &mut crate_pool.get().unwrap();
            let id = idle_machine(conn);
            for _ in 0..20 {
                let running = AnyMachine::load(conn, id)
                    .unwrap()
                    .perform(conn, &Action::Start(Uuid::new_v4()))
                    .unwrap();
                running.perform(conn, &Action::Complete).unwrap();
            }
        });
    });
    for &id in &machines {
        assert_consistent(admin, id);
    }
    // The legacy calls ran under the server's default: no session setting of
    // the crate's reached them.
    let levels: Vec<Value> = sql_query(
        "SELECT DISTINCT isolation_level AS value FROM machine_state_transitions \
         WHERE machine_id = ANY($1) AND id > $2::bigint",
    )
    .bind::<diesel::sql_types::Array<SqlUuid>, _>(&machines)
    .bind::<Text, _>(&created.value)
    .load(admin)
    .unwrap();
    let levels: Vec<&str> = levels.iter().map(|l| l.value.as_str()).collect();
    assert_eq!(levels, ["read committed"]);
}

/// The binary through the pooler (`--pooler`), quiet on stderr.
fn through(bouncer: &PgBouncer, db: &TestDb, args: &[&str]) -> String {
    let output = Command::new(crate::support::machine_state_binary())
        .env_remove("DATABASE_URL")
        .env_remove("MACHINE_STATE_DATA_DIR")
        .env_remove("MACHINE_STATE_POOLER")
        .env_remove("RUST_LOG")
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .arg("--database-url")
        .arg(bouncer.url(&db.name))
        .arg("--pooler")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.is_empty(), "{args:?}: {stderr}");
    assert!(
        output.status.code() == Some(0) || (args[0] == "repair" && args.contains(&"--dry-run")),
        "{args:?} exited with {:?}",
        output.status
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn every_command_works_through_a_transaction_pooler() {
    let db = TestDb::empty();
    let bouncer = pgbouncer(&[]);
    through(&bouncer, &db, &["migrate"]);
    through(&bouncer, &db, &["rollback", "--all"]);
    through(&bouncer, &db, &["migrate"]);
    let id = through(&bouncer, &db, &["add"]).trim().to_owned();
    through(&bouncer, &db, &["add", "--state", "idle"]);
    for args in [
        vec!["online", &id],
        vec!["offline", &id],
        vec!["start", &id],
        vec!["complete", &id],
        vec!["start", &id],
        vec!["stop", &id],
        vec!["start", &id],
        vec!["fail", &id, "--message", "heater"],
        vec!["reset", &id],
        vec!["start", &id],
        vec!["show", &id],
        vec!["show", &id, "--json"],
        vec!["list"],
        vec!["list", "--json"],
        vec!["audit"],
        vec!["audit", "--json"],
        vec!["repair", "--dry-run"],
        vec!["repair"],
        vec!["stuck", "--older-than", "1s"],
        vec!["stuck", "--older-than", "1s", "--json"],
    ] {
        through(&bouncer, &db, &args);
    }
    // Four shell loops at once, as in the field report.
    thread::scope(|scope| {
        for _ in 0..4 {
            let (bouncer, db) = (&bouncer, &db);
            scope.spawn(move || {
                let id = through(bouncer, db, &["add", "--state", "idle"]);
                let id = id.trim();
                for _ in 0..5 {
                    through(bouncer, db, &["start", id]);
                    through(bouncer, db, &["complete", id]);
                }
            });
        }
    });
    let out = through(&bouncer, &db, &["audit"]);
    assert!(out.contains("0 of 6 machines diverged"), "{out}");
    through(
        &bouncer,
        &db,
        &[
            "demo",
            "--machines",
            "2",
            "--workers",
            "3",
            "--seconds",
            "1",
        ],
    );
    let log = bouncer.log();
    assert!(!log.contains("prepared statement"), "{log}");
    assert_consistent(&mut db.conn(), id.parse().unwrap());
}
