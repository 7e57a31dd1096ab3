//! Transitions together with the caller's own writes, in one REPEATABLE READ
//! transaction.

use diesel::prelude::*;

use crate::connection::lost_race;
use crate::error::Error;
use crate::retry::RetryPolicy;

/// Run `body` in one REPEATABLE READ transaction, so that the transitions
/// and the caller's own diesel statements in it commit together or not at
/// all (the legacy executor also updated `process_executions`; with this, a
/// refused transition rolls that update back too).
///
/// Transitions inside `body` run in this transaction. When it loses a race
/// (a serialization failure or deadlock, in a transition, in the caller's
/// statements or at COMMIT), the whole transaction is rolled back and `body`
/// runs again, under `retry`. So **`body` must only touch the database**: no
/// messages sent, no files written, nothing that must not happen twice.
/// Any other error rolls back and is returned.
///
/// # Errors
///
/// [`Error::RetriesExhausted`] when races outlast `retry`; otherwise the
/// first error `body` returns, or the database's.
pub fn transaction<T>(
    conn: &mut PgConnection,
    retry: &RetryPolicy,
    mut body: impl FnMut(&mut PgConnection) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut schedule = retry.schedule();
    loop {
        let result = conn.build_transaction().repeatable_read().run(&mut body);
        let race = match result {
            Err(Error::RetriesExhausted { source, .. }) => source,
            Err(Error::Database(source)) if lost_race(&source) => source,
            other => return other,
        };
        let attempt = schedule.attempt();
        let retried = schedule.retry();
        crate::telemetry::transaction_race(retried);
        if !retried {
            return Err(Error::RetriesExhausted {
                attempts: attempt,
                source: race,
            });
        }
        tracing::debug!(attempt, error = %race, "transaction lost a race, retrying");
    }
}
