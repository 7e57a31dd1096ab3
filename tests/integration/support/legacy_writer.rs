//! The legacy write pattern (`machine_state::testing::legacy`) as a writer of
//! the harness, to prove that the harness catches it: the executor, starter
//! and stopper read `machines`, decide in application code, then write the two
//! tables with two separate autocommit `UPDATE`s that overwrite whatever is
//! there (no compare-and-set, no fence on the process id), and log the
//! transition.
//!
//! Between the two writes the legacy executor did real work (logging, RPCs);
//! a few scheduler yields stand in for it. Nothing else is slowed down: the
//! divergence comes from real concurrency.

use std::thread;

use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Nullable, Text, Timestamptz, Uuid as SqlUuid};
use machine_state::testing::legacy;
use machine_state::{Action, AnyMachine, Error, State};
use uuid::Uuid;

use super::harness::{Outcome, Refusal, Writer, describe};

/// The legacy two-write pattern.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LegacyWriter;

/// What the legacy code knew of a machine: the `machines` row.
#[derive(Clone, Debug)]
pub(crate) struct LegacyView {
    id: Uuid,
    status: State,
    process_id: Option<Uuid>,
}

#[derive(QueryableByName)]
struct MachinesRow {
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    current_process_id: Option<Uuid>,
}

impl Writer for LegacyWriter {
    type View = LegacyView;

    fn load(&self, conn: &mut PgConnection, id: Uuid) -> Result<LegacyView, Error> {
        let row: MachinesRow =
            sql_query("SELECT status, current_process_id FROM machines WHERE id = $1")
                .bind::<SqlUuid, _>(id)
                .get_result(conn)?;
        let status = row
            .status
            .parse()
            .map_err(|_| Error::InvalidInput(format!("unknown state `{}`", row.status)))?;
        Ok(LegacyView {
            id,
            status,
            process_id: row.current_process_id,
        })
    }

    fn adopt(&self, machine: AnyMachine) -> LegacyView {
        LegacyView {
            id: machine.id(),
            status: machine.state(),
            process_id: machine.process_id(),
        }
    }

    fn perform(
        &self,
        conn: &mut PgConnection,
        view: LegacyView,
        action: &Action,
        operation_id: Uuid,
    ) -> (Outcome, Option<LegacyView>) {
        let to = action.target();
        if !view.status.can_become(to) {
            return (Outcome::Refused(Refusal::Illegal), Some(view));
        }
        let description = match action {
            Action::Fail(description) if description.trim().is_empty() => {
                return (Outcome::Refused(Refusal::InvalidInput), Some(view));
            }
            Action::Fail(description) => Some(description.as_str()),
            _ => None,
        };
        let new_process = match action {
            Action::Start(process_id) => Some(*process_id),
            _ => None,
        };
        match write_twice(conn, &view, to, new_process, description, operation_id) {
            Ok(()) => (Outcome::Applied, None),
            Err(error) => (
                Outcome::Failed(format!("legacy write: {}", describe(&error))),
                None,
            ),
        }
    }
}

/// Both writes and the log entry, each its own autocommit statement. One
/// timestamp for all three, taken by the client, so that only the race (not
/// the clock) can break the invariants.
fn write_twice(
    conn: &mut PgConnection,
    view: &LegacyView,
    to: State,
    new_process: Option<Uuid>,
    description: Option<&str>,
    operation_id: Uuid,
) -> QueryResult<()> {
    let at = Utc::now();
    legacy::write_machines(conn, view.id, to.as_str(), new_process, at)?;
    for _ in 0..fastrand::u8(0..4) {
        thread::yield_now();
    }
    legacy::write_machine_state(conn, view.id, to.as_str(), new_process, description, at)?;
    sql_query(
        "INSERT INTO machine_state_transitions
             (machine_id, from_state, to_state, process_id, description, operation_id, kind,
              transitioned_at, isolation_level)
         VALUES ($1, $2, $3, $4, $5, $6, 'transition', $7, current_setting('transaction_isolation'))",
    )
    .bind::<SqlUuid, _>(view.id)
    .bind::<Text, _>(view.status.as_str())
    .bind::<Text, _>(to.as_str())
    .bind::<Nullable<SqlUuid>, _>(new_process.or(view.process_id))
    .bind::<Nullable<Text>, _>(description)
    .bind::<SqlUuid, _>(operation_id)
    .bind::<Timestamptz, _>(at)
    .execute(conn)?;
    Ok(())
}
