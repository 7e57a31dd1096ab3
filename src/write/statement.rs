//! The default carrier of a transition: SQL statements of data-modifying CTEs,
//! each with a static query id, so diesel prepares them once per connection
//! and reuses the plan.
//!
//! - The **success path** ([`AppliedStatement`]) is tried first, in
//!   autocommit: it writes both rows only if both hold the expected state and
//!   process and the transaction is REPEATABLE READ, appends the history row,
//!   and returns the time, or no time when it wrote nothing. It reads nothing
//!   it does not write, so its plan is half the size of the statement below
//!   (measured with `cargo bench --bench compare`: that statement's planner
//!   and executor overhead cost a quarter of the transition's latency on the
//!   success path). An operation id already in the history makes its insert
//!   fail (unique index): nothing is written, and the statement below
//!   reports the earlier outcome.
//! - The **diagnosing statement** ([`TransitionStatement`]) runs when the
//!   success path wrote nothing, and inside a caller's transaction: it reads
//!   both rows and the operation id, writes under the same guard (the machine
//!   may have come back to the expected state meanwhile), and returns one row
//!   saying what happened or what it found.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use super::{Change, REPEATABLE_READ, RowsFound, Verdict, repeatable_read, sql_file};
use crate::error::Error;
use crate::state::Status;

/// One attempt of `change` (see the module docs of `write`).
pub(super) fn attempt(
    conn: &mut PgConnection,
    change: &Change<'_>,
    in_callers_transaction: bool,
) -> QueryResult<Verdict> {
    let statement = TransitionStatement::new(change);
    let outcome = if in_callers_transaction {
        // A failed insert would abort the caller's transaction: diagnose
        // straight away.
        statement.get_result::<Outcome>(conn)?
    } else {
        match AppliedStatement(statement.clone())
            .get_result::<(Option<DateTime<Utc>>, String)>(conn)
        {
            Ok((Some(at), _)) => return Ok(Ok(at)),
            // Not a REPEATABLE READ session: straight to an explicit transaction.
            Ok((None, isolation)) if isolation != REPEATABLE_READ => conn
                .build_transaction()
                .repeatable_read()
                .run(|conn| statement.clone().get_result::<Outcome>(conn))?,
            Ok((None, _)) => diagnose(conn, &statement)?,
            Err(error) if operation_id_taken(&error) => diagnose(conn, &statement)?,
            Err(error) => return Err(error),
        }
    };
    Ok(outcome.into_verdict(change))
}

/// Run the diagnosing statement in autocommit (or an explicit REPEATABLE READ
/// transaction on another session).
fn diagnose(conn: &mut PgConnection, statement: &TransitionStatement<'_>) -> QueryResult<Outcome> {
    repeatable_read(conn, |conn| {
        let outcome = statement.clone().get_result::<Outcome>(conn)?;
        let isolation = outcome.isolation.clone();
        Ok((outcome, isolation))
    })
}

/// The success path's insert met an operation id already in the history.
fn operation_id_taken(error: &DieselError) -> bool {
    matches!(error, DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
        if info.constraint_name() == Some(OPERATION_ID_KEY))
}

/// The unique index on the history's operation ids.
const OPERATION_ID_KEY: &str = "machine_state_transitions_operation_id_key";

/// The one row the transition statement returns.
#[derive(Queryable)]
pub(super) struct Outcome {
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
    fn into_verdict(self, change: &Change<'_>) -> Verdict {
        if let Some(at) = self.applied_at {
            return Ok(at);
        }
        let machines = self.status.clone().map(|state| Status {
            state,
            process_id: self.machines_process,
        });
        let found = RowsFound {
            machines: self.status.map(|state| Status {
                state,
                process_id: self.machines_process,
            }),
            machine_state: self.current_state.map(|state| Status {
                state,
                process_id: self.state_process,
            }),
            prior: self
                .prior_machine
                .zip(self.prior_to)
                .zip(self.prior_at)
                .map(|((machine, to), at)| (machine, self.prior_from, to, at)),
            isolation: self.isolation,
        };
        // The guard checks exactly what `explain` does, so one of its
        // reasons holds; the rows as a whole are reported otherwise.
        let machine_state = found.machine_state.clone();
        found.explain(change).unwrap_or_else(|| {
            Err(Error::Inconsistent {
                machine_id: change.machine_id,
                machines: machines.unwrap_or_else(|| Status::new(change.from, None)),
                machine_state,
                violations: Vec::new(),
            })
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
    lock_timeout: &'a str,
}

impl<'a> TransitionStatement<'a> {
    fn new(change: &'a Change<'a>) -> Self {
        TransitionStatement {
            machine_id: change.machine_id,
            from: change.from.as_str(),
            expected_process: change.expected_process,
            to: change.to.as_str(),
            new_process: change.new_process,
            description: change.description,
            operation_id: change.operation_id,
            lock_timeout: &change.lock_timeout,
        }
    }
}

impl TransitionStatement<'_> {
    /// The value of bind `$n` of `applied.sql` and `transition.sql`.
    fn bind<'b>(&'b self, n: u8, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<SqlUuid, _>(&self.machine_id),
            2 => out.push_bind_param::<Text, _>(self.from),
            3 => out.push_bind_param::<Nullable<SqlUuid>, _>(&self.expected_process),
            4 => out.push_bind_param::<Text, _>(self.to),
            5 => out.push_bind_param::<Nullable<SqlUuid>, _>(&self.new_process),
            6 => out.push_bind_param::<Nullable<Text>, _>(&self.description),
            7 => out.push_bind_param::<SqlUuid, _>(&self.operation_id),
            8 => out.push_bind_param::<Text, _>(self.lock_timeout),
            n => Err(sql_file::no_such_bind(n)),
        }
    }
}

impl QueryFragment<Pg> for TransitionStatement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        sql_file::walk(include_str!("transition.sql"), &mut out, |n, out| {
            self.bind(n, out)
        })
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

/// The success path: the transition statement without the reads that only
/// explain a refusal. Returns the transition's time (`NULL` when it wrote
/// nothing) and the isolation level it ran under.
struct AppliedStatement<'a>(TransitionStatement<'a>);

impl QueryFragment<Pg> for AppliedStatement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        sql_file::walk(include_str!("applied.sql"), &mut out, |n, out| {
            self.0.bind(n, out)
        })
    }
}

impl QueryId for AppliedStatement<'_> {
    type QueryId = AppliedStatement<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for AppliedStatement<'_> {
    type SqlType = (Nullable<Timestamptz>, Text);
}

impl RunQueryDsl<PgConnection> for AppliedStatement<'_> {}
