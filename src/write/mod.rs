//! The two-table write: the one place where `machines`, `machine_state` and the
//! history are written.
//!
//! A transition is a guarded write of both rows plus a history row, in one
//! REPEATABLE READ transaction. It has two carriers that behave alike:
//!
//! - [`WritePath::Statement`] (the default, `statement.rs`): one SQL statement
//!   of data-modifying CTEs, sent by diesel as a prepared statement (and,
//!   only when it wrote nothing, a second one that says why);
//! - [`WritePath::SqlFunction`] (`function.rs`): a call of the SQL function
//!   `machine_state_transition`, for roles that may not write the tables
//!   themselves (it can be `SECURITY DEFINER`).
//!
//! Both compare-and-set on the state (and process id) the typed machine claims,
//! always write both rows (under snapshot isolation a row that is only read can
//! change concurrently: write skew), append the history row with the
//! client-generated operation id, and report an operation that already
//! committed instead of applying it twice. This module runs them: it picks
//! autocommit or an explicit transaction, retries lost races with backoff, and
//! turns what the database answered into the crate's errors.
//!
//! Transactions: on a session whose default isolation is REPEATABLE READ
//! (every connection of [`crate::pool`]) a transition is one autocommit
//! statement, one round trip; the statement itself checks the isolation level
//! and writes nothing under any other, in which case it is run again inside an
//! explicit `BEGIN ISOLATION LEVEL REPEATABLE READ`. Inside a transaction the
//! caller opened (with diesel's API) it runs there, once, and refuses if that
//! transaction is not REPEATABLE READ; the caller retries the whole transaction
//! ([`crate::transaction`] does).

mod create;
mod function;
pub(crate) mod path;
mod repair;
mod statement;

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use uuid::Uuid;

use crate::connection::{connection_gone, deadlocked, in_transaction, lost_race};
use crate::error::Error;
use crate::pair::Violation;
use crate::retry::RetryPolicy;
use crate::state::{State, Status, Verb};
use crate::telemetry::Observation;

pub use path::WritePath;

pub(crate) use create::create;
pub(crate) use repair::{Repaired, repair};

const REPEATABLE_READ: &str = "repeatable read";

/// How a machine's transitions are run: its retry policy, write path and
/// lock timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    pub retry: RetryPolicy,
    pub write_path: WritePath,
    pub lock_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            retry: RetryPolicy::default(),
            write_path: WritePath::default(),
            lock_timeout: crate::lock::DEFAULT_LOCK_TIMEOUT,
        }
    }
}

/// One transition, as the write path needs it.
pub(crate) struct Change<'a> {
    pub machine_id: Uuid,
    /// Which transition, as the history records it.
    pub verb: Verb,
    pub from: State,
    /// The process the machine must be running now (`Some` exactly when
    /// leaving `processing`): the fencing token.
    pub expected_process: Option<Uuid>,
    pub to: State,
    /// The process the machine runs afterwards (`Some` exactly when entering
    /// `processing`).
    pub new_process: Option<Uuid>,
    /// The failure description (entering `error`), also kept in the history.
    pub description: Option<&'a str>,
    pub operation_id: Uuid,
    /// How long the transition waits for another session's row lock (see
    /// `crate::lock`).
    pub lock_limit: Duration,
}

/// What one attempt reported, once the database answered: the time of the
/// transition, or why it was refused.
type Verdict = Result<DateTime<Utc>, Error>;

/// Apply a transition, observed (see `crate::telemetry`: one span, the
/// counters and the duration). Returns its time (now, or when the same
/// operation id first applied).
pub(crate) fn apply(
    conn: &mut PgConnection,
    change: &Change<'_>,
    settings: &Settings,
) -> Result<DateTime<Utc>, Error> {
    let mut observation = Observation::begin(
        change.machine_id,
        change.verb,
        change.from,
        change.to,
        change.operation_id,
        settings.write_path,
    );
    let span = observation.span().clone();
    let result = span.in_scope(|| carry(conn, change, settings, &mut observation));
    observation.finish(&result);
    result
}

/// Run the transition on its write path, falling back from a missing SQL
/// function to the statement.
fn carry(
    conn: &mut PgConnection,
    change: &Change<'_>,
    settings: &Settings,
    observation: &mut Observation,
) -> Result<DateTime<Utc>, Error> {
    let retry = &settings.retry;
    match settings.write_path {
        WritePath::Statement => with_retries(conn, change, retry, observation, statement::attempt),
        WritePath::SqlFunction => {
            let result = with_retries(conn, change, retry, observation, function::attempt);
            match result {
                Err(Error::Database(error))
                    if function::is_missing(&error) && !in_transaction(conn) =>
                {
                    observation.fall_back();
                    tracing::warn!(
                        machine_id = %change.machine_id, %error,
                        "`machine_state_transition` is missing: falling back to the statement \
                         write path (atomic too); run the migrations"
                    );
                    with_retries(conn, change, retry, observation, statement::attempt)
                }
                other => other,
            }
        }
    }
}

/// Run `attempt` until it is not a lost race, within `retry`'s budget.
fn with_retries(
    conn: &mut PgConnection,
    change: &Change<'_>,
    retry: &RetryPolicy,
    observation: &mut Observation,
    attempt_once: fn(&mut PgConnection, &Change<'_>, bool) -> QueryResult<Verdict>,
) -> Verdict {
    let in_callers_transaction = in_transaction(conn);
    // Inside the caller's transaction a lost race aborted it: the caller
    // retries the whole transaction (`crate::transaction` does).
    let mut schedule = if in_callers_transaction {
        retry.schedule_at_most(1)
    } else {
        retry.schedule()
    };
    loop {
        observation.attempt(in_callers_transaction);
        match attempt_once(conn, change, in_callers_transaction) {
            Ok(verdict) => {
                if in_callers_transaction && verdict.is_ok() {
                    crate::transaction::note_operation(change.operation_id);
                }
                return verdict;
            }
            Err(error) if lost_race(&error) && schedule.retry() => {
                tracing::debug!(
                    machine_id = %change.machine_id, attempt = schedule.attempt() - 1, %error,
                    "transition lost a race, retrying"
                );
                observation.retry(deadlocked(&error));
            }
            Err(error) => {
                let error = database_error(conn, error, change, schedule.attempt());
                return Err(if in_callers_transaction {
                    crate::transaction::inside(error)
                } else {
                    error
                });
            }
        }
    }
}

/// The crate's error for a database error that is not a verdict.
fn database_error(
    conn: &mut PgConnection,
    error: DieselError,
    change: &Change<'_>,
    attempts: u32,
) -> Error {
    if lost_race(&error) {
        return Error::RetriesExhausted {
            attempts,
            source: error,
        };
    }
    if crate::lock::timed_out(&error) {
        // Inside the caller's transaction, now aborted, the lookup fails:
        // no blocker then.
        return Error::LockTimeout {
            machine_id: change.machine_id,
            limit: change.lock_limit,
            blocker: crate::lock::blocker(conn, change.machine_id),
        };
    }
    if connection_gone(conn, &error) {
        return Error::OutcomeUnknown {
            operation_ids: vec![change.operation_id],
            source: error,
        };
    }
    if let DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) = &error
        && info.constraint_name() == Some(RUNNING_PROCESS_INDEX)
        && let Some(process_id) = change.new_process
    {
        return Error::ProcessInUse(process_id);
    }
    crate::migrations::explain_missing_tables(error)
}

/// The unique index that keeps one process on one machine.
const RUNNING_PROCESS_INDEX: &str = "machines_current_process_id_key";

/// Run `query` in autocommit when the session's default isolation is
/// REPEATABLE READ (the query reports the level it ran under and writes
/// nothing under another), else again in an explicit REPEATABLE READ
/// transaction.
fn repeatable_read<T>(
    conn: &mut PgConnection,
    mut query: impl FnMut(&mut PgConnection) -> QueryResult<(T, String)>,
) -> QueryResult<T> {
    let (answer, isolation) = query(conn)?;
    if isolation == REPEATABLE_READ {
        return Ok(answer);
    }
    conn.build_transaction()
        .repeatable_read()
        .run(|conn| query(conn).map(|(answer, _)| answer))
}

/// What the database held when a guarded write did not apply.
struct RowsFound {
    /// `machines`: state and process, or `None` when there is no such machine.
    machines: Option<Status>,
    /// `machine_state`: state and process, if the row exists.
    machine_state: Option<Status>,
    /// The transition already recorded under this operation id, if any.
    prior: Option<Prior>,
    /// The isolation level the attempt ran under.
    isolation: String,
}

/// The history entry an operation id already wrote.
struct Prior {
    machine_id: Uuid,
    from: Option<String>,
    to: String,
    /// `None` on entries written before the history kept verbs.
    verb: Option<String>,
    at: DateTime<Utc>,
}

impl Prior {
    /// Whether this entry is `change`, applied: the same machine, states and
    /// verb (an entry without a verb matches on the states).
    fn is(&self, change: &Change<'_>) -> bool {
        self.machine_id == change.machine_id
            && self.from.as_deref() == Some(change.from.as_str())
            && self.to == change.to.as_str()
            && self
                .verb
                .as_deref()
                .is_none_or(|verb| verb == change.verb.as_str())
    }
}

impl RowsFound {
    /// Why the transition did not apply, or `None` when what was found does
    /// not explain it.
    fn explain(self, change: &Change<'_>) -> Option<Verdict> {
        if let Some(prior) = self.prior {
            return Some(if prior.is(change) {
                Ok(prior.at)
            } else {
                Err(Error::OperationReused(change.operation_id))
            });
        }
        let Some(found) = self.machines else {
            return Some(Err(Error::NotFound(change.machine_id)));
        };
        if self.isolation != REPEATABLE_READ {
            return Some(Err(Error::NotRepeatableRead(self.isolation)));
        }
        if self.machine_state.as_ref() != Some(&found) {
            let violations = match &self.machine_state {
                None => vec![Violation::MissingStateRow],
                Some(theirs) => [
                    (theirs.state != found.state).then_some(Violation::StateMismatch),
                    (theirs.process_id != found.process_id).then_some(Violation::ProcessMismatch),
                ]
                .into_iter()
                .flatten()
                .collect(),
            };
            return Some(Err(Error::Inconsistent {
                machine_id: change.machine_id,
                machines: found,
                machine_state: self.machine_state,
                violations,
            }));
        }
        let expected = Status::new(change.from, change.expected_process);
        (found != expected).then(|| {
            Err(Error::Conflict {
                machine_id: change.machine_id,
                expected,
                found,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::{Change, Prior, REPEATABLE_READ, RowsFound};
    use crate::error::Error;
    use crate::pair::Violation;
    use crate::pair::fixtures::at;
    use crate::state::{State, Status, Verb};

    const MACHINE: Uuid = Uuid::from_u128(1);
    const RUN: Uuid = Uuid::from_u128(7);
    const OPERATION: Uuid = Uuid::from_u128(9);

    /// `processing` (run `RUN`) to `idle` by `complete`.
    fn complete() -> Change<'static> {
        Change {
            machine_id: MACHINE,
            verb: Verb::Complete,
            from: State::Processing,
            expected_process: Some(RUN),
            to: State::Idle,
            new_process: None,
            description: None,
            operation_id: OPERATION,
            lock_limit: Duration::from_secs(1),
        }
    }

    /// Both rows in `status`, no prior entry, under REPEATABLE READ.
    fn found(status: Status) -> RowsFound {
        RowsFound {
            machines: Some(status.clone()),
            machine_state: Some(status),
            prior: None,
            isolation: REPEATABLE_READ.to_owned(),
        }
    }

    fn prior(from: &str, to: &str, verb: Option<&str>) -> Prior {
        Prior {
            machine_id: MACHINE,
            from: Some(from.to_owned()),
            to: to.to_owned(),
            verb: verb.map(str::to_owned),
            at: at(5),
        }
    }

    #[test]
    fn nothing_explains_a_pair_in_the_expected_state() {
        let found = found(Status::new(State::Processing, Some(RUN)));
        assert!(found.explain(&complete()).is_none());
    }

    #[test]
    fn the_same_operation_already_applied_is_its_time() {
        for verb in [Some("complete"), None] {
            let mut rows = found(Status::new(State::Idle, None));
            rows.prior = Some(prior("processing", "idle", verb));
            assert!(
                matches!(rows.explain(&complete()), Some(Ok(t)) if t == at(5)),
                "{verb:?}"
            );
        }
    }

    #[test]
    fn an_operation_id_used_for_another_transition_is_refused() {
        // A stop leaves the same states as a completion: only the verb differs.
        for other in [
            prior("processing", "idle", Some("stop")),
            prior("processing", "error", Some("fail")),
            Prior {
                machine_id: Uuid::from_u128(2),
                ..prior("processing", "idle", Some("complete"))
            },
        ] {
            let mut rows = found(Status::new(State::Idle, None));
            rows.prior = Some(other);
            assert!(matches!(
                rows.explain(&complete()),
                Some(Err(Error::OperationReused(OPERATION)))
            ));
        }
    }

    #[test]
    fn no_machine_is_not_found() {
        let mut rows = found(Status::new(State::Processing, Some(RUN)));
        rows.machines = None;
        assert!(matches!(
            rows.explain(&complete()),
            Some(Err(Error::NotFound(MACHINE)))
        ));
    }

    #[test]
    fn another_isolation_level_is_refused_before_the_rows_are_judged() {
        let mut rows = found(Status::new(State::Idle, None));
        rows.isolation = "read committed".to_owned();
        assert!(matches!(
            rows.explain(&complete()),
            Some(Err(Error::NotRepeatableRead(level))) if level == "read committed"
        ));
    }

    #[test]
    fn rows_that_disagree_are_inconsistent_with_what_differs() {
        let mut rows = found(Status::new(State::Processing, Some(RUN)));
        rows.machine_state = Some(Status::new(State::Idle, None));
        let Some(Err(Error::Inconsistent { violations, .. })) = rows.explain(&complete()) else {
            panic!("not inconsistent");
        };
        assert_eq!(
            violations,
            [Violation::StateMismatch, Violation::ProcessMismatch]
        );

        let mut rows = found(Status::new(State::Processing, Some(RUN)));
        rows.machine_state = None;
        let Some(Err(Error::Inconsistent { violations, .. })) = rows.explain(&complete()) else {
            panic!("not inconsistent");
        };
        assert_eq!(violations, [Violation::MissingStateRow]);
    }

    #[test]
    fn another_state_or_process_is_a_conflict_naming_both() {
        for now in [
            Status::new(State::Idle, None),
            Status::new(State::Processing, Some(Uuid::from_u128(8))),
        ] {
            let rows = found(now.clone());
            let Some(Err(Error::Conflict {
                expected, found, ..
            })) = rows.explain(&complete())
            else {
                panic!("not a conflict");
            };
            assert_eq!(expected, Status::new(State::Processing, Some(RUN)));
            assert_eq!(found, now);
        }
    }
}
