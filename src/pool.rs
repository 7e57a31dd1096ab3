//! A connection pool whose sessions run transitions in one round trip.

use std::time::Duration;

use diesel::PgConnection;
use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection};

use crate::error::Error;

/// The pool type this crate builds.
pub type Pool = diesel::r2d2::Pool<ConnectionManager<PgConnection>>;

/// A connection checked out of a [`Pool`].
pub type PooledConnection = diesel::r2d2::PooledConnection<ConnectionManager<PgConnection>>;

/// Build a pool for `database_url` with this crate's defaults (see
/// [`pool_builder`]).
///
/// # Errors
///
/// [`Error::Pool`] when no connection can be made within the connection
/// timeout.
pub fn pool(database_url: &str) -> Result<Pool, Error> {
    Ok(pool_builder().build(ConnectionManager::new(database_url))?)
}

/// An r2d2 builder with this crate's defaults, to adjust before `build`:
///
/// - `max_size` defaults to 10 connections;
/// - `min_idle` defaults to 1 (one connection is made eagerly);
/// - `connection_timeout` defaults to 10 s;
/// - `test_on_check_out` defaults to **false**: r2d2's default runs a
///   `SELECT 1` on every checkout, one more round trip per transition than the
///   transition itself needs. Instead, a connection that broke is noticed
///   when it is returned (diesel's `has_broken`) and discarded, and a
///   transition that meets a dead connection reports
///   [`Error::OutcomeUnknown`], which the operation id resolves;
/// - every new connection runs `SET default_transaction_isolation =
///   'repeatable read'` ([`RepeatableReadSession`]), so a transition is one
///   autocommit statement that is its own REPEATABLE READ transaction: one
///   round trip instead of three (`BEGIN`, statement, `COMMIT`). Other
///   statements on these connections default to REPEATABLE READ too.
pub fn pool_builder() -> diesel::r2d2::Builder<ConnectionManager<PgConnection>> {
    Pool::builder()
        .max_size(10)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(10))
        .test_on_check_out(false)
        .connection_customizer(Box::new(RepeatableReadSession))
}

/// Makes REPEATABLE READ the session's default isolation level.
#[derive(Clone, Copy, Debug, Default)]
pub struct RepeatableReadSession;

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for RepeatableReadSession {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute("SET default_transaction_isolation = 'repeatable read'")
            .map_err(diesel::r2d2::Error::QueryError)
    }
}
