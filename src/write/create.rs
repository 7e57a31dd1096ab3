//! Registering a machine: both rows and its first history entry in one
//! statement.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use crate::connection::{connection_gone, in_transaction};
use crate::error::Error;
use crate::sql_file::SqlFile;
use crate::state::State;

/// Register a machine: both rows and the history entry in one statement.
pub(crate) fn create(
    conn: &mut PgConnection,
    machine_id: Uuid,
    state: State,
    operation_id: Uuid,
) -> Result<DateTime<Utc>, Error> {
    let statement = Create::with((machine_id, state.as_str(), operation_id));
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

/// `create.sql`: both rows and the first history entry; returns the time.
struct Create;

impl SqlFile for Create {
    const SQL: &'static str = include_str!("create.sql");
    type Binds = (SqlUuid, Text, SqlUuid);
    type Row = Timestamptz;
}

#[cfg(test)]
mod tests {
    #[test]
    fn create_uses_exactly_its_binds() {
        crate::sql_file::assert_binds_match::<super::Create>();
    }
}
