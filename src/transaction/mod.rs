//! Transitions together with the caller's own writes, in one REPEATABLE READ
//! transaction.
//!
//! The body returns the caller's own error type, so `transaction` cannot
//! look inside it to see a lost race; the transitions (and every diesel
//! error converted into [`Error`]) note on this thread what `transaction`
//! needs instead: that a race was lost, and the operation ids that applied,
//! which a COMMIT whose outcome is unknown reports.

use diesel::prelude::*;
use diesel::result::Error as DieselError;

use crate::connection::{connection_gone, lost_race};
use crate::error::Error;
use crate::retry::RetryPolicy;

pub(crate) mod scope;

use scope::{SCOPE, Scope};
pub(crate) use scope::{note_lost_race, note_operation};

/// What a transition's `error` means inside the caller's open transaction:
/// nothing of it can have committed, so a lost connection is
/// [`Error::ConnectionLost`], not an unknown outcome; a lost race is noted
/// for [`transaction`] to run the body again.
pub(crate) fn inside(error: Error) -> Error {
    match error {
        Error::OutcomeUnknown { source, .. } => Error::ConnectionLost(source),
        error @ Error::RetriesExhausted { .. } => {
            note_lost_race();
            error
        }
        error => error,
    }
}

/// Run `body` in one REPEATABLE READ transaction, so that the transitions
/// and the caller's own diesel statements in it commit together or not at
/// all (the legacy executor also updated `process_executions`; with this, a
/// refused transition rolls that update back too).
///
/// `body` returns the caller's own error type `E` (anything an [`Error`]
/// converts into), so it can carry its own reason for rolling back.
///
/// Transitions inside `body` run in this transaction. When it loses a race
/// (a serialization failure or deadlock, in a transition, at COMMIT, or in
/// the caller's statements when their error went through [`Error`], as `?`
/// on a diesel result in a function returning [`Error`] does), the whole
/// transaction is rolled back and `body` runs again, under `retry`. So
/// **`body` must only touch the database**: no messages sent, no files
/// written, nothing that must not happen twice. Any other error rolls back
/// and is returned.
///
/// # Errors
///
/// - The error `body` returned (after `retry`'s budget, the one of its last
///   run when that lost a race).
/// - [`Error::OutcomeUnknown`] when the connection broke during COMMIT: it
///   carries the operation ids of the transitions inside, which
///   [`find_operation`](crate::find_operation) resolves (all of them
///   committed, or none).
/// - [`Error::ConnectionLost`] when it broke before COMMIT (nothing was
///   written), [`Error::RetriesExhausted`] when races at COMMIT outlast
///   `retry`, or [`Error::Database`].
pub fn transaction<T, E>(
    conn: &mut PgConnection,
    retry: &RetryPolicy,
    mut body: impl FnMut(&mut PgConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<Error>,
{
    let mut schedule = retry.schedule();
    loop {
        let mut failed: Option<E> = None;
        let mut finished = false;
        SCOPE.set(Some(Scope::default()));
        let result = conn
            .build_transaction()
            .repeatable_read()
            .run(|conn| match body(conn) {
                Ok(value) => {
                    finished = true;
                    Ok(value)
                }
                Err(error) => {
                    failed = Some(error);
                    Err(DieselError::RollbackTransaction)
                }
            });
        let scope = SCOPE.take().unwrap_or_default();
        let race = match (result, failed) {
            (Ok(value), _) => return Ok(value),
            // The body failed (and the rollback, too, perhaps): its error,
            // unless it lost a race that may be run again.
            (Err(_), Some(error)) if scope.lost_race => Race::Body(error),
            (Err(_), Some(error)) => return Err(error),
            (Err(error), None) if lost_race(&error) => Race::Commit(error),
            (Err(error), None) if connection_gone(conn, &error) => {
                return Err(E::from(if finished {
                    Error::OutcomeUnknown {
                        operation_ids: scope.operations,
                        source: error,
                    }
                } else {
                    Error::ConnectionLost(error)
                }));
            }
            (Err(error), None) => return Err(E::from(Error::Database(error))),
        };
        let attempt = schedule.attempt();
        let retried = schedule.retry();
        crate::telemetry::transaction_race(retried);
        if !retried {
            return Err(match race {
                Race::Body(error) => error,
                Race::Commit(source) => E::from(Error::RetriesExhausted {
                    attempts: attempt,
                    source,
                }),
            });
        }
        tracing::debug!(attempt, "transaction lost a race, retrying");
    }
}

/// A run of the body that lost a race.
enum Race<E> {
    /// In the body: its error.
    Body(E),
    /// At COMMIT.
    Commit(DieselError),
}
