//! The database a command runs against: the `--database-url` given, or the
//! embedded server, started for the command and stopped after it.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::dsl::sql;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use machine_state::migrations::MIGRATIONS;
use machine_state::pool::{ConnectionMode, Manager};
use machine_state::{EmbeddedPostgres, Error};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::args::DatabaseArgs;
use super::error::CliError;

/// The database the embedded server keeps the machines in (the one the
/// examples use too).
const EMBEDDED_DATABASE: &str = "postgres";

/// What a command needs of the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Schema {
    /// Whatever the database holds (`migrate`, `rollback`, `demo`).
    AsIs,
    /// Every migration of this crate applied: the embedded database is
    /// migrated on the spot, a `--database-url` is only checked (and refused
    /// with exit code 2 when behind), never migrated implicitly.
    Current,
}

/// Which embedded server a command gets when no URL is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Embedded {
    /// The one whose data persists in the data directory.
    Persistent,
    /// A throwaway one, removed when the command ends (`demo`).
    Throwaway,
}

/// An open database: a URL, and the embedded server behind it if we started
/// one (stopped by [`Database::stop`], or on drop).
pub(crate) struct Database {
    url: String,
    /// `--pooler`, overriding the URL's switch.
    mode: Option<ConnectionMode>,
    /// `--lock-timeout`.
    lock_timeout: Duration,
    /// Declared before `lock`: fields drop in order, so the server has
    /// stopped before the next command may start it.
    server: Option<EmbeddedPostgres>,
    /// The persistent data directory's lock, held while the server runs.
    lock: Option<Flock<File>>,
}

impl Database {
    /// Reach the database the arguments name, making sure it has the schema
    /// the command needs.
    ///
    /// # Errors
    ///
    /// The server does not start, the database cannot be reached, or it is
    /// not migrated ([`CliError::NotMigrated`]).
    pub(crate) fn open(
        args: &DatabaseArgs,
        schema: Schema,
        embedded: Embedded,
    ) -> Result<Database, CliError> {
        let url = args.database_url.as_deref().filter(|url| !url.is_empty());
        let database = match url {
            Some(url) => Database {
                url: url.to_owned(),
                mode: args.pooler,
                lock_timeout: args.lock_timeout,
                server: None,
                lock: None,
            },
            None => Self::embedded(args, embedded)?,
        };
        if schema == Schema::Current {
            let conn = &mut database.connect()?;
            if database.is_embedded() {
                for version in machine_state::run_migrations(conn)? {
                    tracing::info!(%version, "applied a migration to the embedded database");
                }
            } else {
                ensure_migrated(conn)?;
            }
        }
        Ok(database)
    }

    /// Start the embedded server, with its database.
    fn embedded(args: &DatabaseArgs, embedded: Embedded) -> Result<Database, CliError> {
        let (server, lock) = match embedded {
            Embedded::Persistent => {
                let data_dir = data_dir(args)?;
                let lock = lock(&data_dir)?;
                let server = EmbeddedPostgres::builder().data_dir(data_dir).start()?;
                (server, Some(lock))
            }
            Embedded::Throwaway => (EmbeddedPostgres::start_temporary()?, None),
        };
        tracing::info!(
            data_dir = %server.data_dir().display(),
            "started the embedded PostgreSQL server"
        );
        Ok(Database {
            url: server.url(EMBEDDED_DATABASE),
            mode: args.pooler,
            lock_timeout: args.lock_timeout,
            server: Some(server),
            lock,
        })
    }

    /// `--pooler`, if given.
    pub(crate) fn mode(&self) -> Option<ConnectionMode> {
        self.mode
    }

    /// How long a transition waits for another session's row lock.
    pub(crate) fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// The database's URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is the embedded server's database.
    pub(crate) fn is_embedded(&self) -> bool {
        self.server.is_some()
    }

    /// A new connection as `machine_state::pool::Manager` makes them: direct
    /// ones default to REPEATABLE READ (a startup option, no `SET`), so a
    /// transition is one statement; through a transaction-mode pooler
    /// nothing outlives a transaction.
    ///
    /// # Errors
    ///
    /// [`Error::Connection`] when the database cannot be reached.
    pub(crate) fn connect(&self) -> Result<PgConnection, Error> {
        self.manager()?.establish()
    }

    /// The connection manager for this database and mode.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an unknown pooler mode in the URL.
    pub(crate) fn manager(&self) -> Result<Manager, Error> {
        let manager = Manager::new(&self.url)?;
        Ok(match self.mode {
            Some(mode) => manager.mode(mode),
            None => manager,
        })
    }

    /// Stop the embedded server, if any, reporting a failure to stop.
    ///
    /// # Errors
    ///
    /// [`Error::Server`] when the server's directory cannot be removed.
    pub(crate) fn stop(self) -> Result<(), Error> {
        let stopped = match &self.server {
            Some(server) => server.stop(),
            None => Ok(()),
        };
        drop(self.lock);
        stopped
    }
}

/// Take the lock of a persistent data directory (`<dir>.lock`), waiting for
/// another command that holds it: one server per data directory at a time,
/// so commands run concurrently take turns instead of failing.
fn lock(data_dir: &Path) -> Result<Flock<File>, CliError> {
    let path = data_dir.with_extension("lock");
    let fail = |source: std::io::Error| CliError::Lock {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(fail)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(fail)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((file, Errno::EWOULDBLOCK)) => {
            tracing::info!(
                data_dir = %data_dir.display(),
                "waiting for another `machine-state` command using the same data directory"
            );
            Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| fail(std::io::Error::from(errno)))
        }
        Err((_, errno)) => Err(fail(std::io::Error::from(errno))),
    }
}

/// The embedded server's data directory: `--data-dir`, or the default
/// ([`EmbeddedPostgres::default_data_dir`], which moves out of a private
/// directory as root). An explicit `--data-dir` the server cannot reach is
/// refused with an explanation.
fn data_dir(args: &DatabaseArgs) -> Result<PathBuf, CliError> {
    let Some(requested) = args.data_dir.as_deref() else {
        return Ok(EmbeddedPostgres::default_data_dir()?);
    };
    let absolute = std::path::absolute(requested)
        .map_err(|e| CliError::Input(format!("cannot resolve `{}`: {e}", requested.display())))?;
    if let Some(private) = EmbeddedPostgres::blocked_by(&absolute) {
        return Err(CliError::Input(format!(
            "the embedded server runs as an unprivileged user (`initdb` refuses root), which \
             cannot reach `{}` through `{}` (not searchable by others): choose a `--data-dir` \
             it can reach",
            absolute.display(),
            private.display()
        )));
    }
    Ok(absolute)
}

/// A version recorded in diesel's bookkeeping table.
#[derive(QueryableByName)]
struct AppliedVersion {
    #[diesel(sql_type = Text)]
    version: String,
}

/// Refuse a database that lacks any of this crate's migrations, reading
/// diesel's bookkeeping table without creating it (diesel's own
/// `has_pending_migration` would).
fn ensure_migrated(conn: &mut PgConnection) -> Result<(), CliError> {
    let tracked: bool = diesel::select(sql::<Bool>(
        "to_regclass('__diesel_schema_migrations') IS NOT NULL",
    ))
    .get_result(conn)
    .map_err(Error::from)?;
    let applied: Vec<String> = if tracked {
        diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
            .load::<AppliedVersion>(conn)
            .map_err(Error::from)?
            .into_iter()
            .map(|row| row.version)
            .collect()
    } else {
        Vec::new()
    };
    let ours = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map_err(|e| Error::Migration(e.to_string()))?;
    let pending: Vec<String> = ours
        .iter()
        .map(|migration| migration.name().version().to_string())
        .filter(|version| !applied.contains(version))
        .map(|version| format!("`{version}`"))
        .collect();
    if pending.is_empty() {
        Ok(())
    } else {
        Err(CliError::NotMigrated { pending })
    }
}
