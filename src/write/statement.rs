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

use super::{Answer, Change, Found, REPEATABLE_READ, repeatable_read};
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
    Ok(outcome.into_answer(change))
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
      AND p.lock_timeout IS NOT NULL
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
        out.push_sql("::uuid AS operation_id, set_config('lock_timeout', ");
        out.push_bind_param::<Text, _>(self.lock_timeout)?;
        out.push_sql(
            ", true) AS lock_timeout, current_setting('transaction_isolation') AS isolation",
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

/// The success path: the transition statement without the reads that only
/// explain a refusal. Returns the transition's time (`NULL` when it wrote
/// nothing) and the isolation level it ran under.
struct AppliedStatement<'a>(TransitionStatement<'a>);

/// A bind of [`AppliedStatement`].
#[derive(Clone, Copy)]
enum Bind {
    MachineId,
    From,
    ExpectedProcess,
    To,
    NewProcess,
    Description,
    OperationId,
    LockTimeout,
}

/// [`AppliedStatement`]'s SQL: each fragment is followed by its bind, then
/// [`APPLIED_SQL_END`]. Both rows are written (`machine_state` is joined into
/// the guard, and its row updated), and under REPEATABLE READ a concurrent
/// change of either makes the update fail with 40001.
const APPLIED_SQL: &[(&str, Bind)] = &[
    (
        "WITH machine_row AS (\n    UPDATE machines m\n    SET status = ",
        Bind::To,
    ),
    (", current_process_id = ", Bind::NewProcess),
    (
        ", updated_at = now()\n    FROM machine_state s\n    WHERE m.id = ",
        Bind::MachineId,
    ),
    (
        " AND s.machine_id = m.id\n      AND m.status = ",
        Bind::From,
    ),
    (" AND s.current_state = ", Bind::From),
    (
        "\n      AND m.current_process_id IS NOT DISTINCT FROM ",
        Bind::ExpectedProcess,
    ),
    (
        "\n      AND s.process_id IS NOT DISTINCT FROM ",
        Bind::ExpectedProcess,
    ),
    (
        "\n      AND (SELECT set_config('lock_timeout', ",
        Bind::LockTimeout,
    ),
    (
        ", true)) IS NOT NULL\n      \
         AND current_setting('transaction_isolation') = 'repeatable read'\n    \
         RETURNING m.id\n), state_row AS (\n    UPDATE machine_state s\n    SET current_state = ",
        Bind::To,
    ),
    (",\n        process_id = ", Bind::NewProcess),
    (
        ",\n        state_since = now(),\n        updated_at = now(),\n        \
         is_failure_mode = (",
        Bind::To,
    ),
    (
        " = 'error'),\n        failure_component = NULL,\n        \
         failure_description = CASE WHEN ",
        Bind::To,
    ),
    (" = 'error' THEN ", Bind::Description),
    (
        " END\n    WHERE s.machine_id IN (SELECT id FROM machine_row)\n    \
         RETURNING s.machine_id\n), entry AS (\n    INSERT INTO machine_state_transitions\n        \
         (machine_id, from_state, to_state, process_id, description, operation_id, kind,\n         \
         transitioned_at, isolation_level)\n    SELECT r.machine_id, ",
        Bind::From,
    ),
    (", ", Bind::To),
    (", coalesce(", Bind::NewProcess),
    (", ", Bind::ExpectedProcess),
    ("), ", Bind::Description),
    (", ", Bind::OperationId),
];

const APPLIED_SQL_END: &str = ", 'transition', now(),
           current_setting('transaction_isolation')
    FROM state_row r
    RETURNING transitioned_at
)
SELECT (SELECT transitioned_at FROM entry), current_setting('transaction_isolation')";

impl QueryFragment<Pg> for AppliedStatement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let s = &self.0;
        for (sql, bind) in APPLIED_SQL {
            out.push_sql(sql);
            match bind {
                Bind::MachineId => out.push_bind_param::<SqlUuid, _>(&s.machine_id)?,
                Bind::From => out.push_bind_param::<Text, _>(s.from)?,
                Bind::ExpectedProcess => {
                    out.push_bind_param::<Nullable<SqlUuid>, _>(&s.expected_process)?;
                }
                Bind::To => out.push_bind_param::<Text, _>(s.to)?,
                Bind::NewProcess => out.push_bind_param::<Nullable<SqlUuid>, _>(&s.new_process)?,
                Bind::Description => out.push_bind_param::<Nullable<Text>, _>(&s.description)?,
                Bind::OperationId => out.push_bind_param::<SqlUuid, _>(&s.operation_id)?,
                Bind::LockTimeout => out.push_bind_param::<Text, _>(s.lock_timeout)?,
            }
        }
        out.push_sql(APPLIED_SQL_END);
        Ok(())
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
