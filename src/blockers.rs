//! Who kept a change of the schema from its locks (a migration, the
//! history's prepare and prune, `doctor`'s fixes): the sessions
//! `pg_stat_activity` and `pg_locks` show holding a table lock since before
//! the wait began.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz};

/// A session that held a lock a migration (or revert, or other DDL) waited for, as
/// `pg_stat_activity` shows it to the migrating role: a role that may not see
/// another role's sessions (without `pg_read_all_stats`) gets their pid only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockingSession {
    /// Its backend process id (`pg_terminate_backend` takes it).
    pub pid: i32,
    /// The `application_name` it connected with (empty when not set or not
    /// visible).
    pub application_name: String,
    /// What it was doing (`idle in transaction`, `active`, ...; `unknown`
    /// when not visible).
    pub state: String,
    /// When its transaction began, if visible.
    pub transaction_start: Option<DateTime<Utc>>,
    /// When it entered its current state, if visible (for `idle in
    /// transaction`: since when it has been doing nothing).
    pub state_change: Option<DateTime<Utc>>,
    /// Its current or last statement (empty when not visible).
    pub query: String,
}

impl fmt::Display for BlockingSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend {}", self.pid)?;
        let mut details = Vec::new();
        if !self.application_name.is_empty() {
            details.push(format!("`{}`", self.application_name));
        }
        match self.state_change {
            Some(at) => details.push(format!("{} since {}", self.state, time(at))),
            None => details.push(self.state.clone()),
        }
        if let Some(at) = self.transaction_start {
            details.push(format!("transaction open since {}", time(at)));
        }
        write!(f, " ({})", details.join(", "))?;
        let query = self.query.split_whitespace().collect::<Vec<_>>().join(" ");
        if !query.is_empty() {
            write!(f, ", last query `{query}`")?;
        }
        Ok(())
    }
}

/// A timestamp to the second, in UTC.
fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The sessions, in words, for a message: `backend 1 (...); backend 2 (...)`,
/// or what to do when none could be seen.
pub(crate) fn describe(sessions: &[BlockingSession]) -> String {
    if sessions.is_empty() {
        return "no blocking session visible to this role (they may have ended)".to_owned();
    }
    sessions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Integer)]
    pid: i32,
    #[diesel(sql_type = Text)]
    application_name: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    xact_start: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    state_change: Option<DateTime<Utc>>,
    #[diesel(sql_type = Text)]
    query: String,
}

/// The sessions that held a table lock through the whole of a wait of
/// `lock_timeout` that just timed out (`blocking_sessions.sql`); empty when
/// the look fails (it is a diagnosis, never a reason to fail).
pub(crate) fn find(conn: &mut PgConnection, lock_timeout: Duration) -> Vec<BlockingSession> {
    let millis = i64::try_from(lock_timeout.as_millis()).unwrap_or(i64::MAX);
    diesel::sql_query(include_str!("blocking_sessions.sql"))
        .bind::<BigInt, _>(millis)
        .load::<Row>(conn)
        .map(|rows| {
            rows.into_iter()
                .map(|row| BlockingSession {
                    pid: row.pid,
                    application_name: row.application_name,
                    state: row.state,
                    transaction_start: row.xact_start,
                    state_change: row.state_change,
                    query: row.query,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_reads_as_far_as_it_is_visible() {
        let at = "2026-12-05T03:41:36Z".parse().ok();
        let seen = BlockingSession {
            pid: 42,
            application_name: "psql".into(),
            state: "idle in transaction".into(),
            transaction_start: at,
            state_change: at,
            query: "UPDATE machines\n   SET status = 'idle'".into(),
        };
        assert_eq!(
            seen.to_string(),
            "backend 42 (`psql`, idle in transaction since 2026-12-05 03:41:36 UTC, \
             transaction open since 2026-12-05 03:41:36 UTC), \
             last query `UPDATE machines SET status = 'idle'`"
        );
        let hidden = BlockingSession {
            pid: 7,
            application_name: String::new(),
            state: "unknown".into(),
            transaction_start: None,
            state_change: None,
            query: String::new(),
        };
        assert_eq!(hidden.to_string(), "backend 7 (unknown)");
        assert_eq!(
            describe(&[hidden.clone(), hidden]),
            "backend 7 (unknown); backend 7 (unknown)"
        );
        assert!(describe(&[]).starts_with("no blocking session visible"));
    }
}
