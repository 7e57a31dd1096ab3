//! The SQL-function carrier of a transition: `machine_state_transition(...)`,
//! which locks both rows, checks and writes them and the history (see
//! migrations/…_create_transition_functions). For roles that may run
//! transitions but not write the tables.

use chrono::{DateTime, Utc};
use diesel::pg::sql_state;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{Nullable, Text, Timestamptz, Uuid as SqlUuid};

use super::{Change, Prior, RowsFound, Verdict, repeatable_read};
use crate::connection::{connection_gone, lost_race, sqlstate};
use crate::error::Error;
use crate::history::find_operation;
use crate::pair::Pair;
use crate::sql_file::SqlFile;

/// One attempt of `change` through the SQL function.
pub(super) fn attempt(
    conn: &mut PgConnection,
    change: &Change<'_>,
    in_callers_transaction: bool,
) -> QueryResult<Verdict> {
    let result = if in_callers_transaction {
        // A savepoint keeps the caller's transaction usable when the function
        // refuses, so that the refusal can be explained.
        conn.transaction(|conn| call(conn, change))
    } else {
        repeatable_read(conn, |conn| {
            call(conn, change).map(|(at, isolation)| ((at, isolation.clone()), isolation))
        })
    };
    match result {
        Ok((Some(at), _)) => Ok(Ok(at)),
        Ok((None, isolation)) => Ok(Err(Error::NotRepeatableRead(isolation))),
        Err(error)
            if lost_race(&error)
                || is_missing(&error)
                || crate::lock::timed_out(&error)
                || connection_gone(conn, &error) =>
        {
            Err(error)
        }
        // The function refused with one of its own SQLSTATEs: explain the
        // refusal from what the database holds now.
        Err(error) => Ok(explain_refusal(conn, change, error)),
    }
}

/// Whether `error` says the SQL function does not exist: SQLSTATE 42883
/// with a position in our statement (`transition_call.sql`, whose only
/// function that is not built in is `machine_state_transition`). A
/// function missing inside its body has a position in the body's query
/// instead, and is not a reason to fall back. Never the message: it is in
/// the server's language.
pub(super) fn is_missing(error: &DieselError) -> bool {
    matches!(error, DieselError::DatabaseError(_, info)
        if info.sqlstate() == Some(sql_state::UNDEFINED_FUNCTION)
            && info.statement_position().is_some())
}

/// The class of the SQL functions' own SQLSTATEs (`MS001`–`MS009`,
/// `migrations/README.md`).
const REFUSAL_CLASS: &str = "MS";

fn explain_refusal(conn: &mut PgConnection, change: &Change<'_>, error: DieselError) -> Verdict {
    let Some(code) = sqlstate(&error).filter(|code| code.class().as_str() == REFUSAL_CLASS) else {
        return Err(Error::Database(error));
    };
    if code.subclass() == "005" {
        // Invalid input: the function's own message says which.
        if let DieselError::DatabaseError(_, info) = &error {
            return Err(Error::InvalidInput(info.message().to_owned()));
        }
    }
    let Ok(pair) = Pair::load(conn, change.machine_id) else {
        return Err(Error::Database(error));
    };
    let Ok(prior) = find_operation(conn, change.operation_id) else {
        return Err(Error::Database(error));
    };
    let found = RowsFound {
        machines: pair.as_ref().map(Pair::machines_status),
        machine_state: pair.as_ref().and_then(Pair::machine_state_status),
        prior: prior.map(|e| Prior {
            machine_id: e.machine_id,
            from: e.from_state.map(|state| state.as_str().to_owned()),
            to: e.to_state.as_str().to_owned(),
            verb: e.verb,
            at: e.transitioned_at,
        }),
        isolation: super::REPEATABLE_READ.to_owned(),
    };
    found.explain(change).unwrap_or(Err(Error::Database(error)))
}

/// `transition_call.sql`: `machine_state_transition(...)`'s time when the
/// transaction is REPEATABLE READ (and nothing otherwise), with the
/// isolation level.
struct TransitionCall;

impl SqlFile for TransitionCall {
    const SQL: &'static str = include_str!("transition_call.sql");
    type Binds = (
        SqlUuid,
        Text,
        Text,
        Nullable<SqlUuid>,
        Nullable<Text>,
        SqlUuid,
        Text,
    );
    type Row = (Nullable<Timestamptz>, Text);
}

/// One call of `change` through the SQL function.
fn call(
    conn: &mut PgConnection,
    change: &Change<'_>,
) -> QueryResult<(Option<DateTime<Utc>>, String)> {
    TransitionCall::with((
        change.machine_id,
        change.from.as_str(),
        change.to.as_str(),
        // No transition goes from `processing` to `processing`, so the
        // function takes one process id for either end.
        change.new_process.or(change.expected_process),
        change.description,
        change.operation_id,
        change.verb.as_str(),
    ))
    .get_result(conn)
}

#[cfg(test)]
mod tests {
    #[test]
    fn transition_call_uses_exactly_its_binds() {
        crate::sql_file::assert_binds_match::<super::TransitionCall>();
    }
}
