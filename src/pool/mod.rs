//! Connections: a pool whose sessions run a transition in one round trip on a
//! direct connection, and leave nothing behind in a transaction-mode pooler.
//!
//! - **Direct** ([`ConnectionMode::Direct`], the default): each connection is
//!   opened with the startup option `-c default_transaction_isolation=
//!   'repeatable read'` merged into its URL (`url.rs`), so a transition is one
//!   autocommit statement that is its own REPEATABLE READ transaction. It is
//!   part of every connection the pool (re)makes, and no `SET` is ever run:
//!   nothing can outlive the session it was made for.
//! - **Through a transaction-mode pooler** ([`ConnectionMode::TransactionPooler`]):
//!   no startup option (PgBouncer refuses it), no session `SET`, and diesel's
//!   prepared statement cache is off, so every statement is sent unnamed with
//!   its binds in one message (diesel ≥ 2.2.9, PR #4539), which PgBouncer ≤
//!   1.20 forwards safely. A transition then runs in autocommit when the role
//!   defaults to REPEATABLE READ (`ALTER ROLE … SET
//!   default_transaction_isolation`, see `sql/roles.sql`), else in an explicit
//!   `BEGIN ISOLATION LEVEL REPEATABLE READ` (the write path checks the level
//!   inside its statement).
//! - **Outages** (`manager.rs`): a checkout tests the connection only when the
//!   pool has not seen a healthy one very recently or has just lost one, so a
//!   server that came back is not answered with its dead connections; the
//!   checkout timeout also caps r2d2's reconnect backoff (at half of it).

mod manager;
mod url;

use diesel::r2d2::ManageConnection;
use std::time::Duration;

pub use manager::Manager;

use crate::error::Error;

/// The pool type this crate builds.
pub type Pool = diesel::r2d2::Pool<Manager>;

/// A connection checked out of a [`Pool`].
pub type PooledConnection = diesel::r2d2::PooledConnection<Manager>;

/// How connections reach PostgreSQL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionMode {
    /// Straight to the server, or through a session-mode pooler: sessions
    /// are opened REPEATABLE READ by default and prepared statements are
    /// cached (the default).
    #[default]
    Direct,
    /// Through a transaction-mode pooler (PgBouncer's `pool_mode =
    /// transaction`, Supabase's pooler): consecutive transactions may run
    /// on different server sessions, which other clients share. No session
    /// state, no named prepared statements.
    TransactionPooler,
}

impl std::str::FromStr for ConnectionMode {
    type Err = Error;

    /// `direct` (or `session`, or empty) and `transaction`: PgBouncer's
    /// `pool_mode` names.
    fn from_str(value: &str) -> Result<Self, Error> {
        match value.trim() {
            "" | "direct" | "session" => Ok(ConnectionMode::Direct),
            "transaction" => Ok(ConnectionMode::TransactionPooler),
            other => Err(Error::InvalidInput(format!(
                "unknown pooler mode `{other}`: expected `transaction`, `session` or `direct`"
            ))),
        }
    }
}

/// The checkout timeout [`pool_builder`] sets: how long `get` waits for a
/// connection (a free one, or a new one while the server is unreachable)
/// before failing with [`Error::Pool`]. r2d2 retries a failed connection
/// attempt after at most half of it, so a server that comes back gets its
/// first new connection within about 0.3 s.
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_millis(600);

/// Build a pool for `database_url` with this crate's defaults (see
/// [`pool_builder`]). A URL ending in `machine_state_pooler=transaction`
/// selects [`ConnectionMode::TransactionPooler`] (see [`Manager::new`]).
///
/// # Errors
///
/// [`Error::InvalidInput`] for an unknown pooler mode; [`Error::Connection`]
/// when the first connection fails (a malformed URL, a refused login, no
/// server), with libpq's reason; [`Error::Pool`] when no connection can be
/// made within the checkout timeout.
pub fn pool(database_url: &str) -> Result<Pool, Error> {
    let manager = Manager::new(database_url)?;
    // One connection first, outside r2d2: its error says why at once, where
    // the pool would wait out its checkout timeout and report a timeout.
    match manager.connect() {
        Ok(_) => {}
        Err(diesel::r2d2::Error::ConnectionError(error)) => return Err(Error::Connection(error)),
        Err(diesel::r2d2::Error::QueryError(error)) => return Err(Error::Database(error)),
    }
    Ok(pool_builder().build(manager)?)
}

/// An r2d2 builder with this crate's defaults, to adjust before `build`
/// (with a [`Manager`]):
///
/// - `max_size` defaults to 10 connections;
/// - `min_idle` defaults to 1 (one connection is made eagerly);
/// - `connection_timeout` defaults to [`CHECKOUT_TIMEOUT`] (0.6 s), r2d2's
///   10 s would also let its reconnect backoff grow to 5 s after an outage;
/// - `test_on_check_out` defaults to **true**, but the [`Manager`] skips the
///   test (a round trip) while the pool is healthy: only when no connection
///   came back healthy in the last 100 ms, or one was lost in the last 2 s,
///   is a checked-out connection pinged first. A connection that broke
///   anyway is noticed when it is returned and discarded, and a transition
///   that meets a dead connection reports [`Error::OutcomeUnknown`], which
///   the operation id resolves.
pub fn pool_builder() -> diesel::r2d2::Builder<Manager> {
    Pool::builder()
        .max_size(10)
        .min_idle(Some(1))
        .connection_timeout(CHECKOUT_TIMEOUT)
        .test_on_check_out(true)
}

/// One connection for `database_url`, prepared as a pool's are (the pooler
/// switch in the URL is honoured): for a command-line tool or a job that
/// needs no pool.
///
/// # Errors
///
/// [`Error::InvalidInput`] for an unknown pooler mode; [`Error::Connection`]
/// when the database cannot be reached.
pub fn connect(database_url: &str) -> Result<diesel::PgConnection, Error> {
    Manager::new(database_url)?.establish()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_malformed_url_is_refused_at_once_with_libpqs_reason() {
        let started = Instant::now();
        let error = pool("host=localhost not a url")
            .err()
            .map(|e| e.to_string());
        assert!(
            started.elapsed() < CHECKOUT_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
        let error = error.unwrap_or_default();
        assert!(
            error.starts_with("could not connect to the database: ")
                && error.contains("missing \"=\" after \"not\""),
            "{error}"
        );
    }
}
