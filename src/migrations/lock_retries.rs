//! A change of the schema's objects outside the migrations (`doctor`'s
//! fixes and their undo), applied the way a migration is: each attempt in a
//! transaction whose `lock_timeout` is the options', tried again after a
//! jittered pause while a lock wait times out (55P03) or a deadlock (40P01)
//! ends it, until the budget is spent (GitLab's `with_lock_retries`).
//!
//! PostgreSQL queues lock requests: an `ALTER TABLE` waiting for a session
//! left idle in a transaction makes every later writer of that table wait
//! behind it. With a short lock timeout the waiting attempt leaves the queue
//! after that long, and the writers go on.

use std::thread;
use std::time::Instant;

use diesel::pg::sql_state;
use diesel::prelude::*;

use super::MigrationOptions;
use super::runner::set_lock_timeout;
use crate::blockers;
use crate::connection::has_sqlstate;
use crate::error::Error;

/// Run `attempt` in a transaction with `options.lock_timeout()`, again and
/// again while it fails on a lock, until `options.budget()` is spent; then
/// [`Error::Blocked`] naming `operation` and the sessions in the way.
pub(crate) fn with_lock_retries<T>(
    conn: &mut PgConnection,
    options: &MigrationOptions,
    operation: &'static str,
    mut attempt: impl FnMut(&mut PgConnection) -> Result<T, Error>,
) -> Result<T, Error> {
    let started = Instant::now();
    let deadline = started + options.budget();
    let setting = crate::lock::setting(options.lock_timeout());
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = conn.transaction(|conn| {
            // Put back after the attempt: inside the caller's transaction
            // (a savepoint of it) the setting would outlive the attempt.
            let previous = set_lock_timeout(conn, &setting, true)?;
            let done = attempt(conn)?;
            set_lock_timeout(conn, &previous, true)?;
            Ok(done)
        });
        match result {
            Err(error) if waited_for_a_lock(&error) => {
                let Some(pause) = options.pause_before_retry(attempts, deadline) else {
                    return Err(Error::Blocked {
                        operation,
                        waited: started.elapsed(),
                        blockers: blockers::find(conn, options.lock_timeout()),
                    });
                };
                tracing::info!(
                    attempts,
                    "{operation}: a lock was held past {:?}: retry in {pause:?}",
                    options.lock_timeout()
                );
                thread::sleep(pause);
            }
            other => return other,
        }
    }
}

/// Whether `error` is a lock wait that timed out or a deadlock.
fn waited_for_a_lock(error: &Error) -> bool {
    matches!(error, Error::Database(e)
        if has_sqlstate(e, sql_state::LOCK_NOT_AVAILABLE)
            || has_sqlstate(e, sql_state::T_R_DEADLOCK_DETECTED))
}
