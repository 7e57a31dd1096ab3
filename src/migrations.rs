//! The embedded schema migrations (the `migrations/` folder, which the diesel
//! CLI runs as well).

use diesel::PgConnection;
use diesel::pg::sql_state;
use diesel::result::Error as DieselError;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::error::Error;

/// Every migration of this crate, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Apply every pending migration; returns the versions applied (none when the
/// database is up to date).
///
/// # Errors
///
/// [`Error::Migration`] when a migration fails; it is rolled back whole.
pub fn run_migrations(conn: &mut PgConnection) -> Result<Vec<String>, Error> {
    conn.run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect())
        .map_err(|e| Error::Migration(e.to_string()))
}

/// Revert the most recent migration; returns its version.
///
/// # Errors
///
/// [`Error::Migration`] when there is none or its `down.sql` fails.
pub fn revert_last_migration(conn: &mut PgConnection) -> Result<String, Error> {
    conn.revert_last_migration(MIGRATIONS)
        .map(|version| version.to_string())
        .map_err(|e| Error::Migration(e.to_string()))
}

/// Revert every applied migration, newest first; returns their versions.
///
/// # Errors
///
/// [`Error::Migration`] when a `down.sql` fails.
pub fn revert_all_migrations(conn: &mut PgConnection) -> Result<Vec<String>, Error> {
    conn.revert_all_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect())
        .map_err(|e| Error::Migration(e.to_string()))
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
