//! Registering a machine: both rows and its first history entry in one
//! statement.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use crate::connection::{connection_gone, in_transaction};
use crate::error::Error;
use crate::state::State;

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
    let inside = in_transaction(conn);
    let result = if inside {
        statement.get_result(conn)
    } else {
        conn.build_transaction()
            .repeatable_read()
            .run(|conn| statement.get_result(conn))
    };
    if inside && result.is_ok() {
        crate::transaction::note_operation(operation_id);
    }
    result.map_err(|error| match error {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, ref info)
            if info.constraint_name() == Some("machines_pkey") =>
        {
            Error::AlreadyExists(machine_id)
        }
        error if connection_gone(conn, &error) && inside => Error::ConnectionLost(error),
        error if connection_gone(conn, &error) => Error::OutcomeUnknown {
            operation_ids: vec![operation_id],
            source: error,
        },
        error => crate::migrations::explain_missing_tables(error),
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
    (machine_id, from_state, to_state, operation_id, kind, transitioned_at, isolation_level,
     verb)
SELECT r.machine_id, NULL, p.state, p.operation_id, 'create', now(),
       current_setting('transaction_isolation'), 'create'
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
