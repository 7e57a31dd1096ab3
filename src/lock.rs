//! How long a transition waits for another session's row lock, and who held
//! it when the wait was given up.
//!
//! The limit is PostgreSQL's `lock_timeout`, set by the transition's own
//! statement with `set_config('lock_timeout', …, true)` before it touches a
//! row (an uncorrelated subquery: evaluated once, first). `true` makes it
//! local to the transaction, so in autocommit it ends with the statement and
//! nothing outlives it (a transaction-mode pooler included). When the limit
//! is reached PostgreSQL cancels the statement (SQLSTATE 55P03): nothing was
//! written.

use std::fmt;
use std::time::Duration;

use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{Integer, Text, Uuid as SqlUuid};
use uuid::Uuid;

/// How long a transition waits for a row lock held by another session
/// before it is refused with [`Error::LockTimeout`](crate::Error::LockTimeout),
/// unless set otherwise ([`Machine::with_lock_timeout`](crate::Machine::with_lock_timeout)).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The session that held the lock a transition gave up waiting for, as
/// `pg_stat_activity` shows it to the transition's role (a role that may not
/// see other roles' sessions gets no [`Blocker`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    /// Its backend process id (`pg_terminate_backend` takes it).
    pub pid: i32,
    /// What it was doing (`idle in transaction`, `active`, ...).
    pub state: String,
    /// Its current or last statement.
    pub query: String,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let query: String = self.query.split_whitespace().collect::<Vec<_>>().join(" ");
        write!(
            f,
            "backend {} ({}), running `{query}`",
            self.pid, self.state
        )
    }
}

/// The value `set_config('lock_timeout', …)` gets for `limit` (whole
/// milliseconds; zero means no limit, as in PostgreSQL).
pub(crate) fn setting(limit: Duration) -> String {
    format!("{}ms", limit.as_millis())
}

/// Whether `error` is PostgreSQL's lock timeout (SQLSTATE 55P03).
pub(crate) fn timed_out(error: &DieselError) -> bool {
    crate::connection::has_sqlstate(error, diesel::pg::sql_state::LOCK_NOT_AVAILABLE)
}

#[derive(QueryableByName)]
struct BlockerRow {
    #[diesel(sql_type = Integer)]
    pid: i32,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Text)]
    query: String,
}

/// The session whose transaction locks either row of `machine_id` now (the
/// rows' `xmax` is its transaction id), if it can be seen.
pub(crate) fn blocker(conn: &mut PgConnection, machine_id: Uuid) -> Option<Blocker> {
    diesel::sql_query(include_str!("lock_blocker.sql"))
        .bind::<SqlUuid, _>(machine_id)
        .get_result::<BlockerRow>(conn)
        .optional()
        .ok()
        .flatten()
        .map(|row| Blocker {
            pid: row.pid,
            state: row.state,
            query: row.query,
        })
}
