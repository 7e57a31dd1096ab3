//! The transition history: one append-only row per applied transition, how
//! to read it ([`history`], [`find_operation`]) and how to keep it bounded
//! ([`prune_history`]).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::error::Error;
use crate::schema::machine_state_transitions;
use crate::state::StoredState;

pub use crate::retention::{
    DEFAULT_BATCH, MIN_RETENTION, prepare_history, prepare_history_with, prune_history,
    prune_history_with,
};

/// One row of `machine_state_transitions`.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, QueryableByName, Selectable)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[diesel(table_name = machine_state_transitions, check_for_backend(diesel::pg::Pg))]
pub struct HistoryEntry {
    /// Position in the history (increases with commit order per machine).
    pub id: i64,
    /// The machine.
    pub machine_id: Uuid,
    /// The state left; `None` on the entry that registered the machine.
    pub from_state: Option<StoredState>,
    /// The state entered.
    pub to_state: StoredState,
    /// The process started (to `processing`) or ended (from it).
    pub process_id: Option<Uuid>,
    /// The failure description, or the note of a repair.
    pub description: Option<String>,
    /// The client-generated id of the operation.
    pub operation_id: Uuid,
    /// `create`, `transition` or `repair`.
    pub kind: String,
    /// The transaction time of the transition.
    pub transitioned_at: DateTime<Utc>,
    /// The isolation level the transition ran under.
    pub isolation_level: String,
    /// Which transition this is: a [`Verb`](crate::Verb) (`start`,
    /// `complete`, `stop`, ...), or `create` or `repair` for those kinds;
    /// `None` on entries written before the history kept verbs (migration
    /// `2026-12-05-100000`). `processing -> idle` is a `complete` or a
    /// `stop`: only this field tells them apart.
    pub verb: Option<String>,
}

/// A fresh operation id, as the crate makes one when none is given: a UUIDv7,
/// whose leading bits are the time in milliseconds, so that consecutive ids
/// land on the last pages of the history's unique index (random v4 ids would
/// touch a random, often cold, page each; see `migrations/README.md`). Any UUID is
/// accepted as an operation id; use this one for yours too.
pub fn new_operation_id() -> Uuid {
    Uuid::now_v7()
}

/// A machine's history, oldest first: its chain of entries, walked back from
/// its latest (`machine_state.history_head`) one index lookup per entry, then
/// the entries written before the history was partitioned (see
/// `history.sql`).
///
/// # Errors
///
/// Database errors only; an unknown machine has an empty history.
pub fn history(conn: &mut PgConnection, machine_id: Uuid) -> Result<Vec<HistoryEntry>, Error> {
    diesel::sql_query(include_str!("history.sql"))
        .bind::<diesel::sql_types::Uuid, _>(machine_id)
        .load(conn)
        .map_err(|error| crate::connection::mark_broken_if_gone(conn, error))
        .map_err(crate::migrations::explain_missing_tables)
}

/// The history entry an operation wrote, if it committed: how to resolve an
/// [`Error::OutcomeUnknown`].
///
/// # Errors
///
/// Database errors only.
pub fn find_operation(
    conn: &mut PgConnection,
    operation_id: Uuid,
) -> Result<Option<HistoryEntry>, Error> {
    machine_state_transitions::table
        .filter(machine_state_transitions::operation_id.eq(operation_id))
        .select(HistoryEntry::as_select())
        .first(conn)
        .optional()
        .map_err(|error| crate::connection::mark_broken_if_gone(conn, error))
        .map_err(crate::migrations::explain_missing_tables)
}
