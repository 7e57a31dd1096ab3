//! The two rows of one machine, read in one snapshot, and the invariants they
//! must hold together (I1–I5; see ARCHITECTURE.md).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::schema::{machine_state, machines};
use crate::state::{State, Status};

/// The `machine_state` half of a pair.
#[derive(Clone, Debug, PartialEq, Eq, Queryable)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StateRow {
    /// `machine_state.current_state`.
    pub current_state: String,
    /// `machine_state.process_id`.
    pub process_id: Option<Uuid>,
    /// `machine_state.state_since`.
    pub state_since: DateTime<Utc>,
    /// `machine_state.is_failure_mode`.
    pub is_failure_mode: bool,
    /// `machine_state.failure_description`.
    pub failure_description: Option<String>,
    /// `machine_state.updated_at`.
    pub state_updated_at: DateTime<Utc>,
}

/// Both rows of one machine as one statement read them.
#[derive(Clone, Debug, PartialEq, Eq, Queryable)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Pair {
    /// `machines.id`.
    pub machine_id: Uuid,
    /// `machines.status`.
    pub status: String,
    /// `machines.current_process_id`.
    pub current_process_id: Option<Uuid>,
    /// `machines.updated_at`.
    pub updated_at: DateTime<Utc>,
    /// The `machine_state` row, if there is one.
    pub state: Option<StateRow>,
}

/// One broken invariant of a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::Display)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum Violation {
    /// There is no `machine_state` row at all.
    #[strum(to_string = "no `machine_state` row")]
    MissingStateRow,
    /// I1: `machines.status` differs from `machine_state.current_state`.
    #[strum(to_string = "I1: `machines.status` differs from `machine_state.current_state`")]
    StateMismatch,
    /// I2: the two process ids differ.
    #[strum(to_string = "I2: the process ids of the two rows differ")]
    ProcessMismatch,
    /// I3: a process id outside `processing`, or none in it.
    #[strum(to_string = "I3: a process id must be set exactly in `processing`")]
    ProcessOutsideProcessing,
    /// I4: failure mode outside `error`, or `error` without failure mode and a
    /// description.
    #[strum(to_string = "I4: failure mode (with a description) must be set exactly in `error`")]
    FailureMode,
    /// I5: `machine_state.state_since` differs from `machines.updated_at`.
    #[strum(to_string = "I5: `state_since` differs from `machines.updated_at`")]
    Timestamps,
    /// The state string is none of `offline`, `idle`, `processing`, `error`.
    #[strum(to_string = "unknown state string")]
    UnknownState,
}

impl Violation {
    /// Whether the violation makes the machine's state untrustworthy (I1–I4,
    /// unknown states), as opposed to a stale timestamp (I5) only.
    pub fn breaks_state(self) -> bool {
        self != Violation::Timestamps
    }
}

impl Pair {
    /// Read both rows of a machine in one statement (one snapshot).
    pub(crate) fn load(conn: &mut PgConnection, machine_id: Uuid) -> QueryResult<Option<Pair>> {
        Self::query()
            .filter(machines::id.eq(machine_id))
            .first(conn)
            .optional()
    }

    /// Read every pair in one statement (one snapshot), ordered by machine id.
    pub(crate) fn load_all(conn: &mut PgConnection) -> QueryResult<Vec<Pair>> {
        Self::query().order(machines::id).load(conn)
    }

    #[expect(clippy::type_complexity, reason = "the select clause of a join")]
    fn query() -> diesel::dsl::Select<
        diesel::dsl::LeftJoin<machines::table, machine_state::table>,
        (
            machines::id,
            machines::status,
            machines::current_process_id,
            machines::updated_at,
            diesel::dsl::Nullable<(
                machine_state::current_state,
                machine_state::process_id,
                machine_state::state_since,
                machine_state::is_failure_mode,
                machine_state::failure_description,
                machine_state::updated_at,
            )>,
        ),
    > {
        machines::table.left_join(machine_state::table).select((
            machines::id,
            machines::status,
            machines::current_process_id,
            machines::updated_at,
            (
                machine_state::current_state,
                machine_state::process_id,
                machine_state::state_since,
                machine_state::is_failure_mode,
                machine_state::failure_description,
                machine_state::updated_at,
            )
                .nullable(),
        ))
    }

    /// What `machines` says.
    pub fn machines_status(&self) -> Status {
        Status::stored(&self.status, self.current_process_id)
    }

    /// What `machine_state` says, if the row exists.
    pub fn machine_state_status(&self) -> Option<Status> {
        self.state
            .as_ref()
            .map(|s| Status::stored(&s.current_state, s.process_id))
    }

    /// Every invariant among I1–I5 that this pair breaks; empty when it is
    /// consistent.
    pub fn violations(&self) -> Vec<Violation> {
        let Some(row) = &self.state else {
            return vec![Violation::MissingStateRow];
        };
        let mut found = Vec::new();
        let state = self.status.parse::<State>().ok();
        if state.is_none() || row.current_state.parse::<State>().is_err() {
            found.push(Violation::UnknownState);
        }
        if self.status != row.current_state {
            found.push(Violation::StateMismatch);
        }
        if self.current_process_id != row.process_id {
            found.push(Violation::ProcessMismatch);
        }
        if let Some(state) = state {
            let processing = state == State::Processing;
            if self.current_process_id.is_some() != processing
                || row.process_id.is_some() != processing
            {
                found.push(Violation::ProcessOutsideProcessing);
            }
            let error = state == State::Error;
            let described = row
                .failure_description
                .as_deref()
                .is_some_and(|d| !d.trim().is_empty());
            if row.is_failure_mode != error || (error && !described) {
                found.push(Violation::FailureMode);
            }
        }
        if row.state_since != self.updated_at {
            found.push(Violation::Timestamps);
        }
        found
    }

    /// What each row says: "`machines` says `idle`, `machine_state` says
    /// `processing` (process `…`)".
    pub fn sides(&self) -> String {
        sides(
            &self.machines_status(),
            self.machine_state_status().as_ref(),
        )
    }

    /// This pair's refusal as [`Error::Inconsistent`](crate::Error::Inconsistent),
    /// naming `violations`.
    pub(crate) fn inconsistent(&self, violations: Vec<Violation>) -> crate::Error {
        crate::Error::Inconsistent {
            machine_id: self.machine_id,
            machines: self.machines_status(),
            machine_state: self.machine_state_status(),
            violations,
        }
    }
}

/// What each row of a pair says, in one line: the one wording of a pair
/// that disagrees (errors, the audit, the command line).
pub(crate) fn sides(machines: &Status, machine_state: Option<&Status>) -> String {
    let theirs = machine_state.map_or_else(|| "nothing".to_owned(), ToString::to_string);
    format!("`machines` says {machines}, `machine_state` says {theirs}")
}

/// [`sides`] and the invariants broken, for [`Error::Inconsistent`](crate::Error::Inconsistent)'s message.
pub(crate) fn account(
    machines: &Status,
    machine_state: Option<&Status>,
    violations: &[Violation],
) -> String {
    let sides = sides(machines, machine_state);
    if violations.is_empty() {
        return sides;
    }
    let listed: Vec<String> = violations.iter().map(ToString::to_string).collect();
    format!("{sides} ({})", listed.join("; "))
}
