//! What an executor's own tests need (feature `testing`): a throwaway
//! PostgreSQL server, a fresh migrated database per test, and a check of the
//! invariants I1–I6 for every machine; and, in [`legacy`], the legacy
//! two-write pattern, to reproduce the race this crate fixes.
//!
//! Each test gets a database of its own, cloned from a migrated template (a
//! `CREATE DATABASE ... TEMPLATE`, milliseconds), because a transition opens
//! its own REPEATABLE READ transaction and cannot run inside a test
//! transaction that rolls everything back.
//!
//! ```no_run
//! use std::sync::OnceLock;
//!
//! use machine_state::testing::{TestServer, assert_all_consistent};
//! use machine_state::{Machine, Offline};
//! use uuid::Uuid;
//!
//! /// One server for the whole test binary. A `static` is never dropped: when
//! /// the binary exits, however the tests ended, the server's janitor stops it
//! /// and removes its directory, so nothing is left behind.
//! fn server() -> &'static TestServer {
//!     static SERVER: OnceLock<TestServer> = OnceLock::new();
//!     SERVER.get_or_init(|| TestServer::start().expect("a test server"))
//! }
//!
//! #[test]
//! fn a_recipe_run_leaves_every_pair_consistent() -> Result<(), machine_state::Error> {
//!     let db = server().database()?;
//!     let conn = &mut db.connect()?;
//!     let running = Machine::<Offline>::create(conn, Uuid::new_v4())?.start(conn, Uuid::new_v4())?;
//!     running.complete(conn)?;
//!     assert_all_consistent(conn);
//!     Ok(())
//! }
//! ```

pub mod legacy;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use uuid::Uuid;

use crate::embedded::{Builder, EmbeddedPostgres};
use crate::error::Error;
use crate::history::HistoryEntry;
use crate::pair::Pair;
use crate::pool::Pool;
use crate::schema::machine_state_transitions;

/// The migrated template every [`TestServer::database`] is cloned from.
const TEMPLATE: &str = "machine_state_template";

/// A throwaway PostgreSQL server with a migrated template database.
#[derive(Debug)]
pub struct TestServer {
    server: EmbeddedPostgres,
    next: AtomicUsize,
}

impl TestServer {
    /// Start a temporary server ([`EmbeddedPostgres::builder`]'s defaults)
    /// and migrate its template database.
    ///
    /// # Errors
    ///
    /// [`Error::Server`] when the server cannot start; [`Error::Migration`]
    /// or database errors when the template cannot be made.
    pub fn start() -> Result<TestServer, Error> {
        Self::start_with(EmbeddedPostgres::builder())
    }

    /// As [`start`](Self::start), with server settings of your own (e.g.
    /// `max_connections` for concurrency tests).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn start_with(builder: Builder) -> Result<TestServer, Error> {
        let server = builder.start()?;
        let mut admin = PgConnection::establish(&server.url("postgres"))?;
        admin.batch_execute(&format!("CREATE DATABASE {TEMPLATE}"))?;
        let mut template = PgConnection::establish(&server.url(TEMPLATE))?;
        crate::migrations::run_migrations(&mut template)?;
        Ok(TestServer {
            server,
            next: AtomicUsize::new(0),
        })
    }

    /// A fresh database with every migration applied.
    ///
    /// # Errors
    ///
    /// Database errors when it cannot be created.
    pub fn database(&self) -> Result<TestDatabase, Error> {
        self.create(Some(TEMPLATE))
    }

    /// A fresh, empty database (no migrations): for tests of a legacy schema
    /// or of the migrations themselves.
    ///
    /// # Errors
    ///
    /// Database errors when it cannot be created.
    pub fn empty_database(&self) -> Result<TestDatabase, Error> {
        self.create(None)
    }

    fn create(&self, template: Option<&str>) -> Result<TestDatabase, Error> {
        let name = format!("test_{}", self.next.fetch_add(1, Ordering::SeqCst));
        let mut admin = PgConnection::establish(&self.server.url("postgres"))?;
        let template = template.map_or(String::new(), |t| format!(" TEMPLATE {t}"));
        admin.batch_execute(&format!("CREATE DATABASE {name}{template}"))?;
        Ok(TestDatabase {
            url: self.server.url(&name),
            name,
        })
    }

    /// The server itself (its URLs, binaries, restart).
    pub fn server(&self) -> &EmbeddedPostgres {
        &self.server
    }

    /// Stop the server now (it also stops when dropped, or when the process
    /// exits).
    ///
    /// # Errors
    ///
    /// [`Error::Server`] when it does not stop.
    pub fn stop(&self) -> Result<(), Error> {
        self.server.stop()
    }
}

/// One test's database on a [`TestServer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A plain connection (session default isolation: READ COMMITTED).
    ///
    /// # Errors
    ///
    /// [`Error::Connection`] when it cannot connect.
    pub fn connect(&self) -> Result<PgConnection, Error> {
        Ok(PgConnection::establish(&self.url)?)
    }

    /// A pool with the crate's defaults ([`crate::pool()`]).
    ///
    /// # Errors
    ///
    /// As [`crate::pool()`].
    pub fn pool(&self) -> Result<Pool, Error> {
        crate::pool::pool(&self.url)
    }
}

/// Every broken invariant of one machine, in words: I1–I5 of its two rows
/// ([`Pair::violations`]), and I6, its history: one unbroken chain (each
/// `from` is the previous `to`) whose last entry is the current state, at the
/// time of the last transition. Empty when the machine is consistent.
///
/// # Errors
///
/// Database errors.
pub fn violations(conn: &mut PgConnection, machine_id: Uuid) -> Result<Vec<String>, Error> {
    let Some(pair) = Pair::load(conn, machine_id)? else {
        return Ok(vec![format!("machine `{machine_id}` does not exist")]);
    };
    let chain = crate::history::history(conn, machine_id)?;
    Ok(machine_violations(&pair, &chain))
}

/// [`violations`] of every machine, read in one snapshot.
///
/// # Errors
///
/// Database errors.
pub fn all_violations(conn: &mut PgConnection) -> Result<Vec<String>, Error> {
    conn.build_transaction()
        .repeatable_read()
        .read_only()
        .run(|conn| {
            let pairs = Pair::load_all(conn)?;
            let entries: Vec<HistoryEntry> = machine_state_transitions::table
                .order((
                    machine_state_transitions::machine_id,
                    machine_state_transitions::id,
                ))
                .select(HistoryEntry::as_select())
                .load(conn)?;
            let mut chains: HashMap<Uuid, Vec<HistoryEntry>> = HashMap::new();
            for entry in entries {
                chains.entry(entry.machine_id).or_default().push(entry);
            }
            let found: Vec<String> = pairs
                .iter()
                .flat_map(|pair| {
                    let chain = chains.get(&pair.machine_id).map_or(&[][..], Vec::as_slice);
                    machine_violations(pair, chain)
                })
                .collect();
            Ok::<_, diesel::result::Error>(found)
        })
        .map_err(crate::migrations::explain_missing_tables)
}

/// I1–I5 of `pair` and I6 of its history `chain`, in words.
fn machine_violations(pair: &Pair, chain: &[HistoryEntry]) -> Vec<String> {
    let mut found: Vec<String> = pair
        .violations()
        .iter()
        .map(|v| format!("machine `{}`: {v}", pair.machine_id))
        .collect();
    found.extend(chain_violations(pair, chain));
    found
}

/// I6 for one machine.
fn chain_violations(pair: &Pair, chain: &[HistoryEntry]) -> Vec<String> {
    let id = pair.machine_id;
    let mut found = Vec::new();
    for link in chain.windows(2) {
        if link[1].from_state.as_ref() != Some(&link[0].to_state) {
            found.push(format!(
                "machine `{id}`: I6: the history goes to `{}`, then from {:?}",
                link[0].to_state, link[1].from_state
            ));
        }
    }
    match chain.last() {
        None => found.push(format!("machine `{id}`: I6: no history")),
        Some(last) if last.to_state.as_str() != pair.status => found.push(format!(
            "machine `{id}`: I6: the history ends in `{}`, `machines` says `{}`",
            last.to_state, pair.status
        )),
        Some(last) if last.transitioned_at != pair.updated_at => found.push(format!(
            "machine `{id}`: I5: the last history entry is not at `machines.updated_at`"
        )),
        Some(_) => {}
    }
    found
}

/// Assert that `machine_id` holds I1–I6 ([`violations`]).
///
/// # Panics
///
/// With every broken invariant listed, or when the database cannot be read:
/// it is an assertion, for tests.
#[track_caller]
pub fn assert_consistent(conn: &mut PgConnection, machine_id: Uuid) {
    match violations(conn, machine_id) {
        Ok(found) if found.is_empty() => {}
        Ok(found) => panic!("{}", found.join("\n")),
        Err(error) => panic!("cannot check machine `{machine_id}`: {error}"),
    }
}

/// Assert that every machine holds I1–I6 ([`all_violations`]).
///
/// # Panics
///
/// As [`assert_consistent`].
#[track_caller]
pub fn assert_all_consistent(conn: &mut PgConnection) {
    match all_violations(conn) {
        Ok(found) if found.is_empty() => {}
        Ok(found) => panic!("{}", found.join("\n")),
        Err(error) => panic!("cannot check the machines: {error}"),
    }
}
