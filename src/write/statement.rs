//! The default carrier of a transition: two SQL statements kept in `.sql`
//! files, sent through [`crate::sql_file`] (a static query id each, so
//! diesel prepares them once per connection and reuses the plan).
//!
//! - **`applied.sql`**, the only statement that writes: both rows, only if
//!   both hold the expected state and process and the transaction is
//!   REPEATABLE READ, and the history row; it returns the time, or no time
//!   when it wrote nothing. It reads nothing it does not write, so its plan
//!   stays small (measured with `cargo bench --bench compare`). An operation
//!   id already in the history makes its insert fail (unique index): nothing
//!   is written.
//! - **`diagnosis.sql`** writes nothing: both rows, the operation id's entry
//!   and the isolation level, which say why a transition did not apply (or
//!   whether it may now).
//!
//! In autocommit (or our own explicit transaction) `applied.sql` runs first;
//! the diagnosis only when it wrote nothing. Inside a caller's transaction
//! the diagnosis runs first, since a failed insert would abort the caller's
//! transaction; `applied.sql` follows when nothing stands in the way.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use super::{Change, Prior, REPEATABLE_READ, RowsFound, Verdict, repeatable_read};
use crate::error::Error;
use crate::sql_file::SqlFile;
use crate::state::Status;

/// One attempt of `change` (see the module docs).
pub(super) fn attempt(
    conn: &mut PgConnection,
    change: &Change<'_>,
    in_callers_transaction: bool,
) -> QueryResult<Verdict> {
    let statement = TransitionStatement::new(change);
    if in_callers_transaction {
        let found = diagnose(conn, &statement)?;
        return match found.explain(change) {
            Some(refused) => Ok(refused),
            None => apply_or_explain(conn, &statement, change),
        };
    }
    match apply(conn, &statement) {
        Ok((Some(at), _)) => Ok(Ok(at)),
        // Not a REPEATABLE READ session: again in an explicit transaction.
        Ok((None, isolation)) if isolation != REPEATABLE_READ => {
            let in_transaction = conn
                .build_transaction()
                .repeatable_read()
                .run(|conn| apply_or_explain(conn, &statement, change));
            match in_transaction {
                Err(error) if operation_id_taken(&error) => {
                    explain_afresh(conn, &statement, change)
                }
                other => other,
            }
        }
        Ok((None, _)) => explain_afresh(conn, &statement, change),
        Err(error) if operation_id_taken(&error) => explain_afresh(conn, &statement, change),
        Err(error) => Err(error),
    }
}

/// Run `applied.sql`: the transition's time (`None` when it wrote nothing)
/// and the isolation level it ran under.
fn apply(
    conn: &mut PgConnection,
    statement: &TransitionStatement<'_>,
) -> QueryResult<(Option<DateTime<Utc>>, String)> {
    let change = statement.change;
    Applied::with((
        change.machine_id,
        change.from.as_str(),
        change.expected_process,
        change.to.as_str(),
        change.new_process,
        change.description,
        change.operation_id,
        statement.lock_timeout.as_str(),
        change.verb.as_str(),
    ))
    .get_result(conn)
}

/// Run `diagnosis.sql`.
fn diagnose(conn: &mut PgConnection, statement: &TransitionStatement<'_>) -> QueryResult<Outcome> {
    let change = statement.change;
    Diagnosis::with((
        change.machine_id,
        change.operation_id,
        statement.lock_timeout.as_str(),
    ))
    .get_result(conn)
}

/// Inside a transaction (ours or the caller's): apply, and if nothing was
/// written, say why from the same snapshot.
fn apply_or_explain(
    conn: &mut PgConnection,
    statement: &TransitionStatement<'_>,
    change: &Change<'_>,
) -> QueryResult<Verdict> {
    if let (Some(at), _) = apply(conn, statement)? {
        return Ok(Ok(at));
    }
    Ok(diagnose(conn, statement)?.into_verdict(change))
}

/// After `applied.sql` wrote nothing in autocommit: say why, from a snapshot
/// of its own (REPEATABLE READ, as the write's). If nothing explains it any
/// more, the machine came back to the expected state in between: a lost
/// race, which the write path retries.
fn explain_afresh(
    conn: &mut PgConnection,
    statement: &TransitionStatement<'_>,
    change: &Change<'_>,
) -> QueryResult<Verdict> {
    let found = repeatable_read(conn, |conn| {
        let found = diagnose(conn, statement)?;
        let isolation = found.isolation.clone();
        Ok((found, isolation))
    })?;
    found.explain(change).ok_or_else(|| {
        DieselError::DatabaseError(
            DatabaseErrorKind::SerializationFailure,
            Box::new("the machine changed back between the write and its diagnosis".to_owned()),
        )
    })
}

/// The success path's insert met an operation id already in the history:
/// the unique index on the operation ids of one of the history's partitions
/// (`machine_state_transitions_default_operation_id_key`,
/// `machine_state_transitions_p20261205_operation_id_key`, ...; PostgreSQL
/// names the partition's index, not the parent's).
fn operation_id_taken(error: &DieselError) -> bool {
    matches!(error, DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
        if info.table_name().is_some_and(|table| table.starts_with(HISTORY))
            && info.constraint_name().is_some_and(|key| key.starts_with(HISTORY)
                && key.ends_with(OPERATION_ID_KEY)))
}

/// The history, and the prefix of its partitions' names.
const HISTORY: &str = "machine_state_transitions";

/// The suffix of the unique indexes on the history's operation ids.
const OPERATION_ID_KEY: &str = "_operation_id_key";

/// The one row `diagnosis.sql` returns.
#[derive(Queryable)]
pub(super) struct Outcome {
    applied_at: Option<DateTime<Utc>>,
    prior_machine: Option<Uuid>,
    prior_from: Option<String>,
    prior_to: Option<String>,
    prior_at: Option<DateTime<Utc>>,
    prior_verb: Option<String>,
    status: Option<String>,
    machines_process: Option<Uuid>,
    current_state: Option<String>,
    state_process: Option<Uuid>,
    isolation: String,
}

impl Outcome {
    /// What was found, as the write path's reasons see it.
    fn rows_found(self) -> RowsFound {
        RowsFound {
            machines: self
                .status
                .map(|state| Status::stored(&state, self.machines_process)),
            machine_state: self
                .current_state
                .map(|state| Status::stored(&state, self.state_process)),
            prior: self
                .prior_machine
                .zip(self.prior_to)
                .zip(self.prior_at)
                .map(|((machine_id, to), at)| Prior {
                    machine_id,
                    from: self.prior_from,
                    to,
                    verb: self.prior_verb,
                    at,
                }),
            isolation: self.isolation,
        }
    }

    /// Why `change` does not apply, or `None` when nothing stands in its way.
    fn explain(self, change: &Change<'_>) -> Option<Verdict> {
        if let Some(at) = self.applied_at {
            return Some(Ok(at));
        }
        self.rows_found().explain(change)
    }

    /// Why `change` did not apply, in the snapshot in which it did not: one of
    /// the reasons holds, since `applied.sql`'s guard checks exactly what
    /// `explain` does; the rows as a whole are reported otherwise.
    fn into_verdict(self, change: &Change<'_>) -> Verdict {
        let found = self.rows_found();
        let machines = found.machines.clone();
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

/// `applied.sql`: writes the transition; returns its time (`NULL` when it
/// wrote nothing) and the isolation level it ran under.
struct Applied;

impl SqlFile for Applied {
    const SQL: &'static str = include_str!("applied.sql");
    type Binds = (
        SqlUuid,
        Text,
        Nullable<SqlUuid>,
        Text,
        Nullable<SqlUuid>,
        Nullable<Text>,
        SqlUuid,
        Text,
        Text,
    );
    type Row = (Nullable<Timestamptz>, Text);
}

/// `diagnosis.sql`: reads what explains a transition that did not apply.
struct Diagnosis;

impl SqlFile for Diagnosis {
    const SQL: &'static str = include_str!("diagnosis.sql");
    type Binds = (SqlUuid, SqlUuid, Text);
    type Row = (
        Nullable<Timestamptz>,
        Nullable<SqlUuid>,
        Nullable<Text>,
        Nullable<Text>,
        Nullable<Timestamptz>,
        Nullable<Text>,
        Nullable<Text>,
        Nullable<SqlUuid>,
        Nullable<Text>,
        Nullable<SqlUuid>,
        Text,
    );
}

/// A transition as both statements bind it.
struct TransitionStatement<'a> {
    change: &'a Change<'a>,
    /// `lock_limit` as `set_config('lock_timeout', …)` takes it.
    lock_timeout: String,
}

impl<'a> TransitionStatement<'a> {
    fn new(change: &'a Change<'a>) -> Self {
        TransitionStatement {
            change,
            lock_timeout: crate::lock::setting(change.lock_limit),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn applied_and_diagnosis_use_exactly_their_binds() {
        crate::sql_file::assert_binds_match::<super::Applied>();
        crate::sql_file::assert_binds_match::<super::Diagnosis>();
    }
}
