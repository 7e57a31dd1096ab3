//! The legacy writer, reproduced for `machine-state demo` and nothing else.
//!
//! **Deliberately broken: never use it to change a machine.** It is here so the
//! demo can show, on a real database with real concurrency, the bug this crate
//! exists to fix. Like the legacy recipe starter, executor and stopper, each
//! change of a machine here is
//!
//! - **two separate autocommit writes**, one to `machines` and one to
//!   `machine_state`, with the component's real work (dispatching the recipe,
//!   reporting its end) *between* them, so another writer can slip in between
//!   the two halves;
//! - **blind overwrites**: each write sets the new state whatever the row holds
//!   now, so a late write from an old decision lands over a newer one;
//! - decided on a read of **one** table only (the starter and stopper read
//!   `machines`, the executor reads `machine_state`), as each legacy component
//!   trusted its own table.
//!
//! A worker still between its two writes when the demo's deadline passes is
//! stopped there, as a crash or a deploy stopped the legacy services: the
//! second write never happens.
//!
//! The two rows of one change get the same client-side timestamp, so a change
//! that is not interleaved with another keeps the pair consistent, I5
//! included: every divergence the demo finds comes from the race, not from
//! clock skew between the writes.

use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Text, Uuid as SqlUuid};
use machine_state::testing::legacy::{write_machine_state, write_machines};
use uuid::Uuid;

use super::workload::{FAILURE, Role, Step, Workload};

/// One state string read back.
#[derive(QueryableByName)]
struct Read {
    #[diesel(sql_type = Text)]
    state: String,
}

/// One legacy worker step on machine `id`: read, decide, then change the
/// machine with two separate writes and the work between them.
pub(crate) fn step(
    conn: &mut PgConnection,
    role: Role,
    id: Uuid,
    work: &Workload,
) -> QueryResult<Step> {
    match role {
        Role::Starter => {
            if !matches!(
                read_machines(conn, id)?.as_deref(),
                Some("offline" | "idle")
            ) {
                return Ok(Step::NothingToDo);
            }
            work.before(role);
            let at = Utc::now();
            let process = Some(Uuid::new_v4());
            write_machines(conn, id, "processing", process, at)?;
            work.between(role);
            if work.stopped() {
                return Ok(Step::Interrupted);
            }
            write_machine_state(conn, id, "processing", process, None, at)?;
        }
        Role::Executor => {
            if read_machine_state(conn, id)?.as_deref() != Some("processing") {
                return Ok(Step::NothingToDo);
            }
            work.before(role);
            let at = Utc::now();
            let (state, description) = if work.recipe_fails() {
                ("error", Some(FAILURE))
            } else {
                ("idle", None)
            };
            write_machine_state(conn, id, state, None, description, at)?;
            work.between(role);
            if work.stopped() {
                return Ok(Step::Interrupted);
            }
            write_machines(conn, id, state, None, at)?;
        }
        Role::Stopper => {
            let state = read_machines(conn, id)?;
            if !matches!(state.as_deref(), Some("processing" | "error")) {
                return Ok(Step::NothingToDo);
            }
            work.before(role);
            let at = Utc::now();
            write_machines(conn, id, "idle", None, at)?;
            work.between(role);
            if work.stopped() {
                return Ok(Step::Interrupted);
            }
            write_machine_state(conn, id, "idle", None, None, at)?;
        }
    }
    tracing::debug!(machine_id = %id, ?role, outcome = "written in two steps", "legacy update");
    Ok(Step::Applied)
}

fn read_machines(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<String>> {
    sql_query("SELECT status AS state FROM machines WHERE id = $1")
        .bind::<SqlUuid, _>(id)
        .get_result::<Read>(conn)
        .optional()
        .map(|row| row.map(|r| r.state))
}

fn read_machine_state(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<String>> {
    sql_query("SELECT current_state AS state FROM machine_state WHERE machine_id = $1")
        .bind::<SqlUuid, _>(id)
        .get_result::<Read>(conn)
        .optional()
        .map(|row| row.map(|r| r.state))
}
