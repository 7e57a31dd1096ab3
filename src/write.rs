//! The two-table write: the one place where `machines`, `machine_state` and the
//! history are written.
//!
//! A transition is a single SQL statement (data-modifying CTEs) that, in one
//! REPEATABLE READ transaction,
//! 1. reads both rows and the operation id in the history,
//! 2. updates both rows only if both still hold the state (and process id) the
//!    typed machine claims, the operation id is unused, and the transaction
//!    really is REPEATABLE READ (compare-and-set; a concurrent writer makes the
//!    update fail with 40001 instead of being overwritten),
//! 3. appends the history row, and
//! 4. returns one row saying whether it applied and, if not, what it found.
//!
//! Both rows are always written together: under snapshot isolation a row that
//! is only read could be changed concurrently (write skew).
//!
//! On a session whose default isolation is REPEATABLE READ (every connection of
//! [`crate::pool`]) the statement runs in autocommit: one round trip. On any
//! other session the guard refuses to write, and the statement is run again in
//! an explicit `BEGIN ISOLATION LEVEL REPEATABLE READ` transaction. Inside a
//! transaction the caller opened, it runs there once, and refuses if that
//! transaction is not REPEATABLE READ.
//!
//! The statement has a static query id, so diesel prepares it once per
//! connection and reuses the plan.

use std::thread;

use chrono::{DateTime, Utc};
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::r2d2::R2D2Connection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::state::{State, Status};

const REPEATABLE_READ: &str = "repeatable read";

/// One transition, as the write path needs it.
pub(crate) struct Change<'a> {
    pub machine_id: Uuid,
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
}

/// Apply a transition, retrying lost races under `retry`. Returns the time of
/// the transition (now, or when the same operation id was first applied).
pub(crate) fn apply(
    conn: &mut PgConnection,
    change: &Change<'_>,
    retry: &RetryPolicy,
) -> Result<DateTime<Utc>, Error> {
    let statement = TransitionStatement::new(change);
    let in_callers_transaction = in_transaction(conn);
    let max_attempts = if in_callers_transaction {
        1
    } else {
        retry.max_attempts.max(1)
    };
    let mut attempt = 1;
    loop {
        let outcome = if in_callers_transaction {
            statement.clone().get_result::<Outcome>(conn)
        } else {
            run_repeatable_read(conn, &statement)
        };
        match outcome {
            Ok(outcome) => return outcome.into_result(change),
            Err(error) if lost_race(&error) && attempt < max_attempts => {
                tracing::debug!(
                    machine_id = %change.machine_id, attempt, %error,
                    "transition lost a race, retrying"
                );
                thread::sleep(retry.backoff(attempt));
                attempt += 1;
            }
            Err(error) if lost_race(&error) => {
                return Err(Error::RetriesExhausted {
                    attempts: attempt,
                    source: error,
                });
            }
            Err(error) if connection_gone(conn, &error) => {
                return Err(Error::OutcomeUnknown {
                    operation_id: change.operation_id,
                    source: error,
                });
            }
            Err(error) => return Err(Error::Database(error)),
        }
    }
}

/// Run the statement in autocommit when the session's default isolation is
/// REPEATABLE READ (one round trip), else in an explicit transaction.
fn run_repeatable_read(
    conn: &mut PgConnection,
    statement: &TransitionStatement<'_>,
) -> QueryResult<Outcome> {
    let outcome = statement.clone().get_result::<Outcome>(conn)?;
    if outcome.isolation == REPEATABLE_READ {
        return Ok(outcome);
    }
    conn.build_transaction()
        .repeatable_read()
        .run(|conn| statement.clone().get_result::<Outcome>(conn))
}

/// Whether the caller has a transaction open on this connection.
pub(crate) fn in_transaction(conn: &mut PgConnection) -> bool {
    AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .ok()
        .flatten()
        .is_some()
}

/// A serialization failure (40001) or deadlock (40P01): the transaction was
/// rolled back and may simply be run again.
pub(crate) fn lost_race(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        // diesel does not expose 40P01; PostgreSQL's message is stable (in
        // English, the default `lc_messages`).
        DieselError::DatabaseError(_, info) => info.message().starts_with("deadlock detected"),
        _ => false,
    }
}

/// The connection broke: what was in flight may or may not have committed.
pub(crate) fn connection_lost(error: &DieselError) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _
        ) | DieselError::BrokenTransactionManager
    )
}

/// Whether the connection is gone after `error` ([`connection_lost`], or an
/// `Unknown` error after which a ping finds the connection dead); if so, the
/// connection is marked broken, so that a pool discards it instead of
/// handing it out again.
///
/// Both halves are needed because diesel notices a lost connection only when
/// libpq already says `CONNECTION_BAD`:
/// - when the server goes away mid-request (crash, immediate shutdown),
///   libpq makes up the error itself ("server closed the connection
///   unexpectedly"), without an SQLSTATE, and diesel may report it as
///   `Unknown`. A failed ping (`ClosedConnection` or `UnableToSendCommand`)
///   tells it apart from a real `Unknown` error, whose ping succeeds, or
///   fails otherwise (in an aborted transaction);
/// - a connection whose backend died while it was idle fails with
///   `ClosedConnection` but is not marked broken, so r2d2 (which asks
///   diesel's `is_broken`) would hand the dead connection out again and again.
pub(crate) fn connection_gone(conn: &mut PgConnection, error: &DieselError) -> bool {
    let gone = connection_lost(error)
        || (matches!(
            error,
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, _)
        ) && conn.ping().is_err_and(|ping| connection_lost(&ping)));
    if gone {
        AnsiTransactionManager::transaction_manager_status_mut(conn).set_in_error();
    }
    gone
}

/// Pass `error` on, having marked `conn` broken if the error says it is gone
/// (see [`connection_gone`]): for the reads, so that a pool does not hand a
/// dead connection out again.
pub(crate) fn forget_if_gone(conn: &mut PgConnection, error: DieselError) -> DieselError {
    connection_gone(conn, &error);
    error
}

/// The one row the transition statement returns.
#[derive(Queryable)]
struct Outcome {
    applied_at: Option<DateTime<Utc>>,
    prior_machine: Option<Uuid>,
    prior_from: Option<String>,
    prior_to: Option<String>,
    prior_at: Option<DateTime<Utc>>,
    status: Option<String>,
    machines_process: Option<Uuid>,
    current_state: Option<String>,
    state_process: Option<Uuid>,
    isolation: String,
}

impl Outcome {
    fn into_result(self, change: &Change<'_>) -> Result<DateTime<Utc>, Error> {
        if let Some(at) = self.applied_at {
            return Ok(at);
        }
        if let (Some(machine), Some(at)) = (self.prior_machine, self.prior_at) {
            let same = machine == change.machine_id
                && self.prior_from.as_deref() == Some(change.from.as_str())
                && self.prior_to.as_deref() == Some(change.to.as_str());
            return if same {
                Ok(at)
            } else {
                Err(Error::OperationReused(change.operation_id))
            };
        }
        let Some(status) = self.status else {
            return Err(Error::NotFound(change.machine_id));
        };
        if self.isolation != REPEATABLE_READ {
            return Err(Error::NotRepeatableRead(self.isolation));
        }
        let found = Status {
            state: status,
            process_id: self.machines_process,
        };
        let theirs = self.current_state.map(|state| Status {
            state,
            process_id: self.state_process,
        });
        if theirs.as_ref() != Some(&found) {
            let theirs = theirs.map_or_else(|| "nothing".to_owned(), |s| s.to_string());
            return Err(Error::Inconsistent {
                machine_id: change.machine_id,
                reason: format!("`machines` says {found}, `machine_state` says {theirs}"),
            });
        }
        Err(Error::Conflict {
            machine_id: change.machine_id,
            expected: Status::new(change.from, change.expected_process),
            found,
        })
    }
}

/// The transition statement with its binds. See the module docs.
#[derive(Clone)]
struct TransitionStatement<'a> {
    machine_id: Uuid,
    from: &'static str,
    expected_process: Option<Uuid>,
    to: &'static str,
    new_process: Option<Uuid>,
    description: Option<&'a str>,
    operation_id: Uuid,
}

impl<'a> TransitionStatement<'a> {
    fn new(change: &Change<'a>) -> Self {
        TransitionStatement {
            machine_id: change.machine_id,
            from: change.from.as_str(),
            expected_process: change.expected_process,
            to: change.to.as_str(),
            new_process: change.new_process,
            description: change.description,
            operation_id: change.operation_id,
        }
    }
}

const TRANSITION_SQL: &str = "
), cur AS (
    SELECT m.status, m.current_process_id, s.current_state, s.process_id
    FROM p JOIN machines m ON m.id = p.machine_id
    LEFT JOIN machine_state s ON s.machine_id = m.id
), prior AS (
    SELECT t.machine_id, t.from_state, t.to_state, t.transitioned_at
    FROM p JOIN machine_state_transitions t ON t.operation_id = p.operation_id
), guard AS (
    SELECT FROM p, cur
    WHERE p.isolation = 'repeatable read'
      AND NOT EXISTS (SELECT FROM prior)
      AND cur.status = p.from_state
      AND cur.current_state = p.from_state
      AND cur.current_process_id IS NOT DISTINCT FROM p.expected_process
      AND cur.process_id IS NOT DISTINCT FROM p.expected_process
), machine_row AS (
    UPDATE machines m
    SET status = p.to_state, current_process_id = p.new_process, updated_at = now()
    FROM p
    WHERE m.id = p.machine_id AND EXISTS (SELECT FROM guard)
    RETURNING m.id
), state_row AS (
    UPDATE machine_state s
    SET current_state = p.to_state,
        process_id = p.new_process,
        state_since = now(),
        updated_at = now(),
        is_failure_mode = (p.to_state = 'error'),
        failure_component = NULL,
        failure_description = CASE WHEN p.to_state = 'error' THEN p.description END
    FROM p
    WHERE s.machine_id IN (SELECT id FROM machine_row)
    RETURNING s.machine_id
), entry AS (
    INSERT INTO machine_state_transitions
        (machine_id, from_state, to_state, process_id, description, operation_id, kind,
         transitioned_at, isolation_level)
    SELECT r.machine_id, p.from_state, p.to_state, coalesce(p.new_process, p.expected_process),
           p.description, p.operation_id, 'transition', now(), p.isolation
    FROM state_row r, p
    RETURNING transitioned_at
)
SELECT (SELECT transitioned_at FROM entry),
       prior.machine_id, prior.from_state, prior.to_state, prior.transitioned_at,
       cur.status, cur.current_process_id, cur.current_state, cur.process_id,
       p.isolation
FROM p LEFT JOIN cur ON true LEFT JOIN prior ON true";

impl QueryFragment<Pg> for TransitionStatement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH p AS (SELECT ");
        out.push_bind_param::<SqlUuid, _>(&self.machine_id)?;
        out.push_sql("::uuid AS machine_id, ");
        out.push_bind_param::<Text, _>(self.from)?;
        out.push_sql("::text AS from_state, ");
        out.push_bind_param::<Nullable<SqlUuid>, _>(&self.expected_process)?;
        out.push_sql("::uuid AS expected_process, ");
        out.push_bind_param::<Text, _>(self.to)?;
        out.push_sql("::text AS to_state, ");
        out.push_bind_param::<Nullable<SqlUuid>, _>(&self.new_process)?;
        out.push_sql("::uuid AS new_process, ");
        out.push_bind_param::<Nullable<Text>, _>(&self.description)?;
        out.push_sql("::text AS description, ");
        out.push_bind_param::<SqlUuid, _>(&self.operation_id)?;
        out.push_sql(
            "::uuid AS operation_id, current_setting('transaction_isolation') AS isolation",
        );
        out.push_sql(TRANSITION_SQL);
        Ok(())
    }
}

impl QueryId for TransitionStatement<'_> {
    type QueryId = TransitionStatement<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for TransitionStatement<'_> {
    type SqlType = (
        Nullable<Timestamptz>,
        Nullable<SqlUuid>,
        Nullable<Text>,
        Nullable<Text>,
        Nullable<Timestamptz>,
        Nullable<Text>,
        Nullable<SqlUuid>,
        Nullable<Text>,
        Nullable<SqlUuid>,
        Text,
    );
}

impl RunQueryDsl<PgConnection> for TransitionStatement<'_> {}

/// Register a machine: both rows and the history entry in one statement.
pub(crate) fn create(
    conn: &mut PgConnection,
    machine_id: Uuid,
    state: State,
    operation_id: Uuid,
) -> Result<DateTime<Utc>, Error> {
    let statement = CreateStatement {
        machine_id,
        state: state.as_str(),
        operation_id,
    };
    let result = if in_transaction(conn) {
        statement.get_result(conn)
    } else {
        conn.build_transaction()
            .repeatable_read()
            .run(|conn| statement.get_result(conn))
    };
    result.map_err(|error| match error {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, ref info)
            if info.constraint_name() == Some("machines_pkey") =>
        {
            Error::AlreadyExists(machine_id)
        }
        error if connection_gone(conn, &error) => Error::OutcomeUnknown {
            operation_id,
            source: error,
        },
        error => Error::Database(error),
    })
}

struct CreateStatement {
    machine_id: Uuid,
    state: &'static str,
    operation_id: Uuid,
}

const CREATE_SQL: &str = "
), machine_row AS (
    INSERT INTO machines (id, status, current_process_id, created_at, updated_at)
    SELECT machine_id, state, NULL, now(), now() FROM p
    RETURNING id
), state_row AS (
    INSERT INTO machine_state
        (machine_id, current_state, state_since, process_id, is_failure_mode, updated_at)
    SELECT r.id, p.state, now(), NULL, false, now() FROM machine_row r, p
    RETURNING machine_id
)
INSERT INTO machine_state_transitions
    (machine_id, from_state, to_state, operation_id, kind, transitioned_at, isolation_level)
SELECT r.machine_id, NULL, p.state, p.operation_id, 'create', now(),
       current_setting('transaction_isolation')
FROM state_row r, p
RETURNING transitioned_at";

impl QueryFragment<Pg> for CreateStatement {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH p AS (SELECT ");
        out.push_bind_param::<SqlUuid, _>(&self.machine_id)?;
        out.push_sql("::uuid AS machine_id, ");
        out.push_bind_param::<Text, _>(self.state)?;
        out.push_sql("::text AS state, ");
        out.push_bind_param::<SqlUuid, _>(&self.operation_id)?;
        out.push_sql("::uuid AS operation_id");
        out.push_sql(CREATE_SQL);
        Ok(())
    }
}

impl QueryId for CreateStatement {
    type QueryId = CreateStatement;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for CreateStatement {
    type SqlType = Timestamptz;
}

impl RunQueryDsl<PgConnection> for CreateStatement {}
