//! The crate's one error type, and the error of a transition that hands the
//! machine back.

use std::fmt;
use std::time::Duration;

use uuid::Uuid;

use crate::lock::Blocker;
use crate::state::Status;

/// Everything that can go wrong in this crate.
///
/// Refusals that leave the database untouched (`Conflict`, `NotFound`,
/// `Inconsistent`, `InvalidInput`, ...) are distinct from failures of the
/// database or the connection, so callers can tell "try something else" from
/// "try again".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No machine with this id exists.
    #[error("machine `{0}` not found")]
    NotFound(Uuid),

    /// A machine with this id already exists.
    #[error("machine `{0}` already exists")]
    AlreadyExists(Uuid),

    /// The machine is no longer in the state (or running the process) the
    /// caller's typed machine claims: another transition got there first, or
    /// the caller holds a stale value. Nothing was written.
    #[error("machine `{machine_id}` is not {expected} any more: the database holds {found}")]
    Conflict {
        /// The machine.
        machine_id: Uuid,
        /// What the transition expected to find.
        expected: Status,
        /// What the database holds now.
        found: Status,
    },

    /// The two rows of the machine disagree (or break an invariant together),
    /// so no state can be trusted; [`audit`](crate::audit) and [`repair`](crate::audit::repair) deal
    /// with it. Nothing was written.
    #[error(
        "machine `{machine_id}` is inconsistent: {}",
        crate::pair::account(.machines, .machine_state.as_ref(), .violations)
    )]
    Inconsistent {
        /// The machine.
        machine_id: Uuid,
        /// What `machines` holds.
        machines: Status,
        /// What `machine_state` holds; `None` when the row is missing.
        machine_state: Option<Status>,
        /// The invariants the pair breaks (empty when only the guard of a
        /// write found the rows changed).
        violations: Vec<crate::pair::Violation>,
    },

    /// The database holds a state string this crate does not know (a legacy
    /// `running`, say).
    #[error("machine `{machine_id}` has unknown state `{state}` in the database")]
    UnknownState {
        /// The machine.
        machine_id: Uuid,
        /// The string found.
        state: String,
    },

    /// The runtime form of an illegal transition (the typed API makes these
    /// impossible to write).
    #[error("machine `{machine_id}` cannot go from `{from}` to `{to}`")]
    IllegalTransition {
        /// The machine.
        machine_id: Uuid,
        /// Its current state.
        from: crate::State,
        /// The state asked for.
        to: crate::State,
    },

    /// An argument was refused before anything was sent to the database.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The process is already running on another machine (a run is on one
    /// machine at a time). Nothing was written.
    #[error("process `{0}` is already running on another machine")]
    ProcessInUse(Uuid),

    /// This operation id was already used for a different transition.
    #[error("operation `{0}` was already used for a different transition")]
    OperationReused(Uuid),

    /// A transition was run inside the caller's own transaction, which is not
    /// REPEATABLE READ.
    #[error("a transition inside an open transaction needs REPEATABLE READ, found `{0}`")]
    NotRepeatableRead(String),

    /// Serialization failures or deadlocks went on past the retry budget.
    #[error("gave up after {attempts} attempt(s) lost to concurrent transitions")]
    RetriesExhausted {
        /// How many times the transition was tried.
        attempts: u32,
        /// The last serialization failure or deadlock.
        #[source]
        source: diesel::result::Error,
    },

    /// Another session held a lock on the machine's rows for longer than the
    /// transition's lock timeout ([`DEFAULT_LOCK_TIMEOUT`](crate::DEFAULT_LOCK_TIMEOUT)
    /// unless set otherwise): a stalled writer, an operator's open `psql`
    /// transaction. PostgreSQL cancelled the statement (SQLSTATE 55P03), so
    /// nothing was written; the transition may be retried (with the same
    /// operation id) once the holder is gone.
    #[error(
        "machine `{machine_id}` stayed locked by another session for more than {limit:?}{}",
        blocker.as_ref().map_or_else(String::new, |b| format!(": {b}"))
    )]
    LockTimeout {
        /// The machine.
        machine_id: Uuid,
        /// The limit that was reached.
        limit: Duration,
        /// The session holding the lock, when the role may see it.
        blocker: Option<Blocker>,
    },

    /// The connection broke while a COMMIT was in flight (a transition's
    /// own, or the one ending [`transaction()`](crate::transaction())), so
    /// whether it committed is unknown. Look the operations up with
    /// [`find_operation`](crate::find_operation), or retry them with the same
    /// operation ids: each applies at most once.
    #[error(
        "connection lost before the outcome of operation(s) {} was known",
        crate::error::ids(.operation_ids)
    )]
    OutcomeUnknown {
        /// The operations whose outcome is unknown (the transitions of the
        /// transaction; empty when it held none).
        operation_ids: Vec<Uuid>,
        /// What the connection reported.
        #[source]
        source: diesel::result::Error,
    },

    /// The connection broke before anything was committed (inside an open
    /// transaction, whose COMMIT was never sent): nothing was written, and
    /// the work may be run again on a new connection.
    #[error("connection lost before anything was committed: {0}")]
    ConnectionLost(diesel::result::Error),

    /// The database lacks this crate's tables: run the migrations.
    #[error("the database has no `{0}` table: run the migrations first")]
    NotMigrated(&'static str),

    /// Any other database error.
    #[error("database error: {0}")]
    Database(diesel::result::Error),

    /// Connecting failed.
    #[error("could not connect to the database: {0}")]
    Connection(diesel::ConnectionError),

    /// The pool could not hand out a connection.
    #[error("could not get a connection from the pool: {0}")]
    Pool(diesel::r2d2::PoolError),

    /// Applying or reverting migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),

    /// Other sessions held a lock that a migration (or its revert) needs on
    /// every attempt until the budget was spent
    /// ([`MigrationOptions`](crate::MigrationOptions)). That migration was
    /// rolled back whole: nothing of it is applied (or reverted); the ones
    /// before it in the same run stay done. Retry once the sessions are
    /// gone (or ended: `pg_terminate_backend(pid)`).
    #[error(
        "{} migration `{migration}` gave up after {attempts} attempt(s) in {:.1?}, blocked by {}",
        if *reverting { "reverting" } else { "applying" },
        waited,
        crate::blockers::describe(blockers)
    )]
    MigrationBlocked {
        /// The migration (its directory name).
        migration: String,
        /// Whether it was being reverted rather than applied.
        reverting: bool,
        /// How many times it was tried.
        attempts: u32,
        /// How long it kept trying.
        waited: Duration,
        /// The sessions that held the locks, as far as the role may see them.
        blockers: Vec<crate::blockers::BlockingSession>,
    },

    /// Other sessions (a long read, a transaction left open) held locks that
    /// a change of the schema's objects needs (preparing or pruning the
    /// history's partitions, `doctor`'s fixes or their undo) on every attempt
    /// until the budget was spent
    /// ([`MigrationOptions`](crate::MigrationOptions)): nothing of it was
    /// applied. Retry once the sessions are gone (or ended:
    /// `pg_terminate_backend(pid)`).
    #[error(
        "{operation} gave up after {:.1?}, blocked by {}",
        waited,
        crate::blockers::describe(blockers)
    )]
    Blocked {
        /// What gave up: `pruning the history`, `preparing the history's
        /// partitions`, `fixing the exposures`, `undoing the fixes`.
        operation: &'static str,
        /// How long it kept trying.
        waited: Duration,
        /// The sessions that held the locks, as far as the role may see them.
        blockers: Vec<crate::blockers::BlockingSession>,
    },

    /// The embedded PostgreSQL server could not be started or stopped.
    #[error("embedded PostgreSQL: {0}")]
    Server(String),
}

impl Error {
    /// Whether running the same operation again (with the same operation
    /// id) may succeed: a lost race past the retry budget, a lock held too
    /// long (a transition's, or a migration's past its budget), an unknown
    /// outcome (a repeat applies at most once), or no connection.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::RetriesExhausted { .. }
                | Error::LockTimeout { .. }
                | Error::MigrationBlocked { .. }
                | Error::Blocked { .. }
                | Error::OutcomeUnknown { .. }
                | Error::ConnectionLost(_)
                | Error::Connection(_)
                | Error::Pool(_)
        )
    }
}

impl From<diesel::result::Error> for Error {
    /// [`Error::Database`]; a lost race (40001, 40P01) is also noted for a
    /// [`transaction()`](crate::transaction()) running on this thread, so
    /// that it runs its body again whatever error type the body returns.
    fn from(error: diesel::result::Error) -> Self {
        if crate::connection::lost_race(&error) {
            crate::transaction::scope::note_lost_race();
        }
        Error::Database(error)
    }
}

impl From<diesel::ConnectionError> for Error {
    fn from(error: diesel::ConnectionError) -> Self {
        Error::Connection(error)
    }
}

impl From<diesel::r2d2::PoolError> for Error {
    fn from(error: diesel::r2d2::PoolError) -> Self {
        Error::Pool(error)
    }
}

/// Operation ids in backticks, separated by commas.
pub(crate) fn ids(ids: &[Uuid]) -> String {
    if ids.is_empty() {
        return "(none)".to_owned();
    }
    ids.iter()
        .map(|id| format!("`{id}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A transition that did not happen, with the machine it was called on, so
/// the caller keeps its value and can decide what to do next.
///
/// Converts into [`Error`] with `?`.
pub struct TransitionError<M> {
    /// The machine, unchanged, as the caller held it.
    pub machine: M,
    /// Why the transition did not happen.
    pub error: Error,
}

impl<M> TransitionError<M> {
    /// Split into the machine and the error.
    pub fn into_parts(self) -> (M, Error) {
        (self.machine, self.error)
    }
}

impl<M: fmt::Debug> fmt::Debug for TransitionError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransitionError")
            .field("machine", &self.machine)
            .field("error", &self.error)
            .finish()
    }
}

impl<M> fmt::Display for TransitionError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<M: fmt::Debug> std::error::Error for TransitionError<M> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl<M> From<TransitionError<M>> for Error {
    fn from(error: TransitionError<M>) -> Self {
        error.error
    }
}

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};

    use super::*;

    #[test]
    fn a_database_error_says_what_the_database_said() {
        let error = Error::from(DieselError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("relation \"no_such_table\" does not exist".to_owned()),
        ));
        assert_eq!(
            error.to_string(),
            "database error: relation \"no_such_table\" does not exist"
        );
        // The cause is in the message, so not a source as well.
        assert!(std::error::Error::source(&error).is_none());
    }

    #[test]
    fn an_unknown_outcome_names_every_operation() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let error = Error::OutcomeUnknown {
            operation_ids: vec![a, b],
            source: DieselError::BrokenTransactionManager,
        };
        assert_eq!(
            error.to_string(),
            format!("connection lost before the outcome of operation(s) `{a}`, `{b}` was known")
        );
    }

    #[test]
    fn the_error_is_small_enough_for_clippys_default_result_large_err() {
        // clippy's `result_large_err` fires at 128 bytes by default: a
        // user's `Result<T, Error>` must stay below it.
        assert!(
            std::mem::size_of::<Error>() < 128,
            "{}",
            std::mem::size_of::<Error>()
        );
    }
}
