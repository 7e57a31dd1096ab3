//! Writing a repaired pair (the policy is `crate::repair`'s).

use diesel::prelude::*;
use uuid::Uuid;

use crate::connection::lost_race;
use crate::error::Error;
use crate::pair::Pair;
use crate::schema::{machine_state, machine_state_transitions, machines};
use crate::state::State;

/// What both rows of a repaired pair hold afterwards.
pub(crate) struct Repaired<'a> {
    pub state: State,
    pub process_id: Option<Uuid>,
    /// The failure description, when the state is `error`.
    pub description: Option<&'a str>,
}

/// The state a machine's history ends in (`last_state.sql`).
#[derive(QueryableByName)]
struct LastState {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    to_state: Option<String>,
}

/// Write a repaired pair (see [`crate::repair`] for the policy): both rows and
/// a `repair` history entry, in one REPEATABLE READ transaction, only if the
/// pair still holds what the audit read. Returns whether it was written.
pub(crate) fn repair(
    conn: &mut PgConnection,
    read: &Pair,
    repaired: &Repaired<'_>,
    note: &str,
) -> Result<bool, Error> {
    let id = read.machine_id;
    let result = conn.build_transaction().repeatable_read().run(|conn| {
        if Pair::load(conn, id)?.as_ref() != Some(read) {
            return Ok(false);
        }
        let last_state = diesel::sql_query(include_str!("last_state.sql"))
            .bind::<diesel::sql_types::Uuid, _>(id)
            .get_result::<LastState>(conn)?
            .to_state;
        let state = repaired.state.as_str();
        diesel::update(machines::table.find(id))
            .set((
                machines::status.eq(state),
                machines::current_process_id.eq(repaired.process_id),
                machines::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)?;
        let state_row = (
            machine_state::current_state.eq(state),
            machine_state::process_id.eq(repaired.process_id),
            machine_state::state_since.eq(diesel::dsl::now),
            machine_state::updated_at.eq(diesel::dsl::now),
            machine_state::is_failure_mode.eq(repaired.state == State::Error),
            machine_state::failure_component.eq(None::<String>),
            machine_state::failure_description.eq(repaired.description),
        );
        if read.state.is_some() {
            diesel::update(machine_state::table.find(id))
                .set(state_row)
                .execute(conn)?;
        } else {
            diesel::insert_into(machine_state::table)
                .values((machine_state::machine_id.eq(id), state_row))
                .execute(conn)?;
        }
        diesel::insert_into(machine_state_transitions::table)
            .values((
                machine_state_transitions::machine_id.eq(id),
                machine_state_transitions::from_state.eq(last_state.unwrap_or(read.status.clone())),
                machine_state_transitions::to_state.eq(state),
                machine_state_transitions::process_id.eq(repaired.process_id),
                machine_state_transitions::description.eq(note),
                machine_state_transitions::operation_id.eq(crate::history::new_operation_id()),
                machine_state_transitions::kind.eq("repair"),
                machine_state_transitions::verb.eq("repair"),
            ))
            .execute(conn)?;
        Ok(true)
    });
    match result {
        Err(error) if lost_race(&error) => Ok(false),
        other => other.map_err(Error::Database),
    }
}
