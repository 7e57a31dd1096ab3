//! What every test needs: a throwaway PostgreSQL server for the whole test
//! binary, a fresh database per test, and an independent check of the
//! invariants I1–I6.

#![allow(dead_code)]

pub(crate) mod harness;
pub(crate) mod language;
pub(crate) mod legacy_writer;
pub(crate) mod pgbouncer;
pub(crate) mod proxy;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Bool, Text};
use machine_state::testing::{TestDatabase, TestServer};
use machine_state::{EmbeddedPostgres, Pool};
use uuid::Uuid;

static SERVER: OnceLock<TestServer> = OnceLock::new();

/// The test server of this binary (the crate's testing kit), started on
/// first use with a migrated template database.
pub(crate) fn test_server() -> &'static TestServer {
    SERVER.get_or_init(|| {
        TestServer::start_with(EmbeddedPostgres::builder().setting("max_connections", "400"))
            .unwrap_or_else(|e| panic!("cannot start the test server: {e}"))
    })
}

/// The PostgreSQL server of this test binary.
pub(crate) fn server() -> &'static EmbeddedPostgres {
    test_server().server()
}

/// A transaction-mode PgBouncer in front of the test server, for `users`
/// besides `postgres` (see [`pgbouncer`]).
pub(crate) fn pgbouncer(users: &[&str]) -> pgbouncer::PgBouncer {
    pgbouncer::PgBouncer::start(server().socket_dir(), users)
        .unwrap_or_else(|e| panic!("cannot start pgbouncer: {e}"))
}

/// The `machine-state` command (the package `cli/`, which this package's
/// tests cannot name with `CARGO_BIN_EXE_*`), built once per test binary
/// into the same target directory, in the same profile.
pub(crate) fn machine_state_binary() -> &'static std::path::Path {
    static BINARY: OnceLock<std::path::PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "machine-state-cli",
                "--bin",
                "machine-state",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo to build `machine-state`: {e}"));
        assert!(status.success(), "cannot build `machine-state`");
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../debug/machine-state")
    })
}

/// A database of its own for one test.
pub(crate) struct TestDb {
    pub(crate) name: String,
    pub(crate) url: String,
}

impl TestDb {
    /// A fresh database with the migrations applied.
    pub(crate) fn new() -> TestDb {
        Self::from(test_server().database().unwrap())
    }

    /// A fresh, empty database (no migrations).
    pub(crate) fn empty() -> TestDb {
        Self::from(test_server().empty_database().unwrap())
    }

    fn from(db: TestDatabase) -> TestDb {
        TestDb {
            name: db.name().to_owned(),
            url: db.url().to_owned(),
        }
    }

    /// The same database, its sessions' messages in German (`lc_messages`,
    /// as a German factory's own server is set up): what a test runs on it
    /// must behave exactly as in English.
    pub(crate) fn in_german(self) -> TestDb {
        language::speak_german(&mut self.conn(), &self.name);
        self
    }

    /// A plain connection (session default isolation: READ COMMITTED).
    pub(crate) fn conn(&self) -> PgConnection {
        PgConnection::establish(&self.url).unwrap()
    }

    /// A pool with the crate's defaults.
    pub(crate) fn pool(&self) -> Pool {
        machine_state::pool(&self.url).unwrap()
    }
}

/// Every invariant I1–I6 that a machine breaks, in words (the testing kit's
/// check); empty when consistent.
pub(crate) fn violations(conn: &mut PgConnection, machine_id: Uuid) -> Vec<String> {
    machine_state::testing::violations(conn, machine_id).unwrap()
}

/// Panic with every broken invariant of `machine_id`.
#[track_caller]
pub(crate) fn assert_consistent(conn: &mut PgConnection, machine_id: Uuid) {
    let found = violations(conn, machine_id);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[derive(QueryableByName)]
struct Single {
    #[diesel(sql_type = Text)]
    value: String,
}

/// `machines.status` of a machine.
pub(crate) fn machines_status(conn: &mut PgConnection, machine_id: Uuid) -> String {
    sql_query("SELECT status AS value FROM machines WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(machine_id)
        .get_result::<Single>(conn)
        .unwrap()
        .value
}

/// Every row of the three tables, as text: to prove that a refused
/// operation changed nothing.
pub(crate) fn snapshot(conn: &mut PgConnection) -> Vec<String> {
    sql_query(
        "SELECT value FROM (
             SELECT 'm' || row_to_json(t)::text AS value FROM machines t
             UNION ALL SELECT 's' || row_to_json(t)::text FROM machine_state t
             UNION ALL SELECT 'h' || row_to_json(t)::text FROM machine_state_transitions t
         ) rows ORDER BY value",
    )
    .load::<Single>(conn)
    .unwrap()
    .into_iter()
    .map(|row| row.value)
    .collect()
}

/// A new machine, brought online (its history: create, then `offline -> idle`).
/// Machine `id` as the database holds it now, typed (`Machine` is not
/// `Clone`: a second value of the same machine comes from a second load,
/// and goes stale once the first one moves on).
pub(crate) fn load_as<S: machine_state::MachineState>(
    conn: &mut PgConnection,
    id: Uuid,
) -> machine_state::Machine<S>
where
    machine_state::Machine<S>:
        TryFrom<machine_state::AnyMachine, Error = machine_state::AnyMachine>,
{
    let any = machine_state::AnyMachine::load(conn, id).unwrap();
    machine_state::Machine::<S>::try_from(any)
        .unwrap_or_else(|other| panic!("machine `{id}` is {}", other.state()))
}

pub(crate) fn idle_machine(conn: &mut PgConnection) -> Uuid {
    machine_state::Machine::<machine_state::Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .bring_online(conn)
        .unwrap()
        .id()
}

/// Write a pair by hand, bypassing the crate (to seed bad data).
pub(crate) fn insert_raw_pair(
    conn: &mut PgConnection,
    machine_id: Uuid,
    status: &str,
    current_state: &str,
) {
    conn.batch_execute(&format!(
        "INSERT INTO machines (id, status) VALUES ('{machine_id}', '{status}');
         INSERT INTO machine_state (machine_id, current_state) VALUES ('{machine_id}', '{current_state}');"
    ))
    .unwrap();
}

/// The SQLSTATE `statement` fails with, `00000` when it succeeds; either way
/// it changes nothing it could not commit. Deferred constraints are checked
/// right after the statement, as the COMMIT of an autocommit statement would,
/// so their errors are caught too. The helper lives in `pg_temp` and is
/// created once per session (a role set with `SET ROLE` can use it).
pub(crate) fn sqlstate_of(conn: &mut PgConnection, statement: &str) -> String {
    conn.batch_execute(
        "DO $$
         BEGIN
             IF to_regprocedure('pg_temp.sqlstate_of(text)') IS NULL THEN
                 CREATE FUNCTION pg_temp.sqlstate_of(statement text) RETURNS text
                 LANGUAGE plpgsql AS $fn$
                 BEGIN
                     EXECUTE statement;
                     SET CONSTRAINTS ALL IMMEDIATE;
                     RETURN '00000';
                 EXCEPTION WHEN OTHERS THEN
                     RETURN SQLSTATE;
                 END $fn$;
             END IF;
         END $$;",
    )
    .unwrap();
    sql_query("SELECT pg_temp.sqlstate_of($1) AS value")
        .bind::<Text, _>(statement)
        .get_result::<Single>(conn)
        .unwrap()
        .value
}

/// The schema of a test database as `pg_dump --schema-only` prints it (by the
/// server's own `pg_dump`), without diesel's bookkeeping table and without the
/// random `\restrict` key newer `pg_dump`s fence their output with.
pub(crate) fn schema_dump(db: &TestDb) -> String {
    let output = std::process::Command::new(server().bin_dir().join("pg_dump"))
        .args([
            "--schema-only",
            "--exclude-table=__diesel_schema_migrations",
            "--dbname",
            &db.url,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("\\restrict ") && !line.starts_with("\\unrestrict "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A new role of the test server, with a name no other test uses. Roles are
/// cluster-wide; the server is thrown away with the test binary.
pub(crate) fn create_role(conn: &mut PgConnection, purpose: &str) -> String {
    static NEXT_ROLE: AtomicUsize = AtomicUsize::new(0);
    let role = format!(
        "{purpose}_{}_{}",
        std::process::id(),
        NEXT_ROLE.fetch_add(1, Ordering::SeqCst)
    );
    conn.batch_execute(&format!("CREATE ROLE {role} NOLOGIN"))
        .unwrap();
    role
}

/// Whether `machine_state_invariants_enforced()` says enforcement is on.
pub(crate) fn invariants_enforced(conn: &mut PgConnection) -> bool {
    #[derive(QueryableByName)]
    struct Enforced {
        #[diesel(sql_type = Bool)]
        enforced: bool,
    }
    sql_query("SELECT machine_state_invariants_enforced() AS enforced")
        .get_result::<Enforced>(conn)
        .unwrap()
        .enforced
}
