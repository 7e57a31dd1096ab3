//! The embedded schema migrations (the `migrations/` folder, which the diesel
//! CLI runs as well), and how they are applied and reverted on a live
//! database: `options` (the lock timeout and the budget), `runner` (the
//! attempts; `crate::blockers` names who was in the way); `lock_retries`,
//! the same patience for `doctor`'s fixes.

mod export;
mod lock_retries;
mod options;
mod runner;

use diesel::PgConnection;
use diesel::migration::MigrationSource;
use diesel::pg::{Pg, sql_state};
use diesel::result::Error as DieselError;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

use crate::error::Error;

pub use crate::blockers::BlockingSession;
pub use export::pending_migrations_script;
pub(crate) use lock_retries::with_lock_retries;
pub use options::MigrationOptions;

/// Every migration of this crate, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Apply every pending migration of this crate, oldest first, with the
/// default [`MigrationOptions`] (500 ms lock timeout, 60 s budget for the
/// run); returns the versions applied (none when the database is up to
/// date). Versions of other migration sets recorded in
/// `__diesel_schema_migrations` (an application's own) are ignored.
///
/// # Errors
///
/// See [`run_migrations_with`].
pub fn run_migrations(conn: &mut PgConnection) -> Result<Vec<String>, Error> {
    run_migrations_with(conn, &MigrationOptions::default())
}

/// Apply every pending migration of this crate, oldest first, each waiting
/// at most `options.lock_timeout()` for any one lock and retried with
/// jittered backoff within `options.budget()`; returns the versions applied.
///
/// Each migration is all or nothing (one transaction, unless its
/// `metadata.toml` says `run_in_transaction = false`); the ones applied before
/// a failure stay applied. Progress (which migration, waiting on whom, retry
/// n of m) is logged with `tracing` at info level, under the target
/// `machine_state::migrations`. diesel hands a failed migration back without
/// its SQLSTATE, so the connection's diesel instrumentation is replaced for
/// the call (to read it) and the default one
/// (`diesel::connection::get_default_instrumentation`) is set back after it.
///
/// # Errors
///
/// - [`Error::MigrationBlocked`] when other sessions held a lock a migration
///   needs on every attempt until the budget was spent: that migration is not
///   applied, and the error names the sessions;
/// - [`Error::Migration`] when a migration fails otherwise; it is rolled back
///   whole.
pub fn run_migrations_with(
    conn: &mut PgConnection,
    options: &MigrationOptions,
) -> Result<Vec<String>, Error> {
    runner::run_pending(conn, &MIGRATIONS, options)
}

/// Apply every pending migration of `source` (an application's own, say),
/// as [`run_migrations_with`] does this crate's: versions recorded by other
/// sets are ignored.
///
/// # Errors
///
/// As [`run_migrations_with`].
pub fn run_migrations_from<S: MigrationSource<Pg>>(
    conn: &mut PgConnection,
    source: &S,
    options: &MigrationOptions,
) -> Result<Vec<String>, Error> {
    runner::run_pending(conn, source, options)
}

/// Revert the most recent of this crate's applied migrations (versions of
/// other migration sets are skipped), with the default [`MigrationOptions`];
/// returns its version.
///
/// # Errors
///
/// See [`revert_last_migration_with`].
pub fn revert_last_migration(conn: &mut PgConnection) -> Result<String, Error> {
    revert_last_migration_with(conn, &MigrationOptions::default())
}

/// Revert the most recent of this crate's applied migrations, waiting for
/// locks as [`run_migrations_with`] does; returns its version.
///
/// # Errors
///
/// [`Error::MigrationBlocked`] as for [`run_migrations_with`] (nothing
/// reverted); [`Error::Migration`] when none of this crate's migrations is
/// applied or its `down.sql` fails.
pub fn revert_last_migration_with(
    conn: &mut PgConnection,
    options: &MigrationOptions,
) -> Result<String, Error> {
    revert_last_migration_from(conn, &MIGRATIONS, options)
}

/// Revert the most recent applied migration of `source` (an application's
/// own, say), whatever other sets recorded after it; returns its version.
/// diesel's own `revert_last_migration` reverts the highest version in
/// `__diesel_schema_migrations`, and fails when that one is not `source`'s.
///
/// # Errors
///
/// As [`revert_last_migration_with`].
pub fn revert_last_migration_from<S: MigrationSource<Pg>>(
    conn: &mut PgConnection,
    source: &S,
    options: &MigrationOptions,
) -> Result<String, Error> {
    runner::revert(conn, source, options, 1)?
        .pop()
        .ok_or_else(|| Error::Migration("no migration of this set is applied".to_owned()))
}

/// Revert every applied migration of this crate, newest first (versions of
/// other migration sets are skipped), with the default
/// [`MigrationOptions`]; returns their versions.
///
/// # Errors
///
/// See [`revert_all_migrations_with`].
pub fn revert_all_migrations(conn: &mut PgConnection) -> Result<Vec<String>, Error> {
    revert_all_migrations_with(conn, &MigrationOptions::default())
}

/// Revert every applied migration of this crate, newest first, each waiting
/// for locks as [`run_migrations_with`] does; returns their versions. Each
/// revert is all or nothing; the ones before a failure stay reverted.
///
/// # Errors
///
/// [`Error::MigrationBlocked`] as for [`run_migrations_with`];
/// [`Error::Migration`] when a `down.sql` fails.
pub fn revert_all_migrations_with(
    conn: &mut PgConnection,
    options: &MigrationOptions,
) -> Result<Vec<String>, Error> {
    runner::revert(conn, &MIGRATIONS, options, usize::MAX)
}

/// Turn an undefined table (SQLSTATE 42P01) that is one of ours into the
/// actionable [`Error::NotMigrated`]. The decision is the SQLSTATE's; the
/// table is the identifier the message names, which no translation changes
/// (longest name first: `machine_state` is a prefix of the history's).
pub(crate) fn explain_missing_tables(error: DieselError) -> Error {
    if let DieselError::DatabaseError(_, info) = &error
        && info.sqlstate() == Some(sql_state::UNDEFINED_TABLE)
    {
        let message = info.message();
        for table in ["machine_state_transitions", "machine_state", "machines"] {
            let quoted = message
                .match_indices(table)
                .any(|(at, _)| !continues_identifier(&message[at + table.len()..]));
            if quoted {
                return Error::NotMigrated(table);
            }
        }
    }
    Error::Database(error)
}

/// Whether `rest` goes on with a character of an identifier (so the name
/// before it was only a prefix).
fn continues_identifier(rest: &str) -> bool {
    rest.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}
