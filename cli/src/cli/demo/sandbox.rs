//! The throwaway database the demo runs in.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use machine_state::{Error, Pool};

use crate::cli::database::Database;
use crate::cli::error::CliError;

/// the command's database, dropped at the end (also when the demo fails
/// half-way).
/// A throwaway database holding the demo's machines, on the same server as
pub(super) struct Sandbox {
    /// The command's database, to create and drop the sandbox from.
    admin_url: String,
    /// The sandbox's URL.
    url: String,
    pub(super) name: String,
    /// `--pooler`, if given.
    mode: Option<machine_state::pool::ConnectionMode>,
    dropped: bool,
}

impl Sandbox {
    /// Create the database and apply the migrations to it.
    ///
    /// # Errors
    ///
    /// The server refuses `CREATE DATABASE` (the role needs `CREATEDB`), or
    /// the URL cannot be pointed at the new database: the legacy writer never
    /// runs anywhere else.
    pub(super) fn create(database: &Database) -> Result<Sandbox, CliError> {
        let name = format!("machine_state_demo_{:08x}", fastrand::u32(..));
        let admin = &mut database.connect()?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|source| CliError::Demo {
                what: format!("cannot create the throwaway database `{name}`"),
                source: Box::new(Error::Database(source)),
            })?;
        let sandbox = Sandbox {
            admin_url: database.url().to_owned(),
            url: with_database(database.url(), &name),
            name,
            mode: database.mode(),
            dropped: false,
        };
        let conn = &mut plain_connection(&sandbox.url)?;
        let current: String = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
            "current_database()",
        ))
        .get_result(conn)
        .map_err(Error::from)?;
        if current != sandbox.name {
            return Err(CliError::Input(format!(
                "cannot point the database URL at the throwaway database `{}` (it reaches \
                 `{current}`): give the URL as `postgresql://...` or as `key=value` pairs",
                sandbox.name
            )));
        }
        machine_state::run_migrations(conn)?;
        Ok(sandbox)
    }

    /// A pool for `workers` workers (and the audit); REPEATABLE READ by
    /// default for this crate's run, as [`machine_state::pool()`] does, and the
    /// server's default for the legacy one.
    pub(super) fn pool(&self, workers: u32, repeatable_read: bool) -> Result<Pool, CliError> {
        let manager = machine_state::pool::Manager::new(&self.url)?;
        // Without the startup option, sessions keep the server's default.
        let manager = match (repeatable_read, self.mode) {
            (false, _) => manager.mode(machine_state::pool::ConnectionMode::TransactionPooler),
            (true, Some(mode)) => manager.mode(mode),
            (true, None) => manager,
        };
        machine_state::pool::pool_builder()
            .max_size(workers + 1)
            .min_idle(None)
            .build(manager)
            .map_err(|e| CliError::Library(Error::Pool(e)))
    }

    /// Drop the database, reporting a failure.
    pub(super) fn drop_database(mut self) -> Result<(), CliError> {
        self.dropped = true;
        let conn = &mut plain_connection(&self.admin_url)?;
        conn.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .map_err(Error::from)?;
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.dropped {
            let dropped = plain_connection(&self.admin_url).map(|mut conn| {
                conn.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            });
            if !matches!(dropped, Ok(Ok(()))) {
                tracing::warn!(database = %self.name, "could not drop the demo's database");
            }
        }
    }
}

/// `url` pointed at the database `name`: libpq takes the last value given
/// for a keyword, in a URL's query (`?dbname=`) as in `key=value` pairs.
fn with_database(url: &str, name: &str) -> String {
    if url.starts_with("postgresql://") || url.starts_with("postgres://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}dbname={name}")
    } else {
        format!("{url} dbname={name}")
    }
}

/// A connection with the server's defaults (no startup option, the
/// pooler switch taken out of the URL), for the sandbox's bookkeeping.
fn plain_connection(url: &str) -> Result<PgConnection, Error> {
    machine_state::pool::Manager::new(url)?
        .mode(machine_state::pool::ConnectionMode::TransactionPooler)
        .establish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_pointed_at_another_database_by_its_last_dbname() {
        assert_eq!(
            with_database("postgresql://u@h/factory", "d"),
            "postgresql://u@h/factory?dbname=d"
        );
        assert_eq!(
            with_database("postgres://u@/f?host=/tmp&port=5432", "d"),
            "postgres://u@/f?host=/tmp&port=5432&dbname=d"
        );
        assert_eq!(
            with_database("host=h dbname=factory", "d"),
            "host=h dbname=factory dbname=d"
        );
    }
}
