//! The default carrier of a transition: one SQL statement of data-modifying
//! CTEs that reads both rows and the operation id, writes both rows only if
//! the guard holds, appends the history row, and returns one row saying what
//! happened. It has a static query id, so diesel prepares it once per
//! connection and reuses the plan.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use super::{Answer, Change, Found, repeatable_read};
use crate::error::Error;
use crate::state::Status;

/// One attempt of `change` (see the module docs of `write`).
pub(super) fn attempt(
    conn: &mut PgConnection,
    change: &Change<'_>,
    in_callers_transaction: bool,
) -> QueryResult<Answer> {
    let statement = TransitionStatement::new(change);
    let outcome = if in_callers_transaction {
        statement.get_result::<Outcome>(conn)?
    } else {
        repeatable_read(conn, |conn| {
            let outcome = statement.clone().get_result::<Outcome>(conn)?;
            let isolation = outcome.isolation.clone();
            Ok((outcome, isolation))
        })?
    };
    Ok(outcome.into_answer(change))
}

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
    fn into_answer(self, change: &Change<'_>) -> Answer {
        if let Some(at) = self.applied_at {
            return Ok(at);
        }
        let found = Found {
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
        found.explain(change).unwrap_or_else(|| {
            Err(Error::Inconsistent {
                machine_id: change.machine_id,
                reason: "the guarded write matched no row".into(),
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
