//! The two rows of one machine, read in one snapshot, and the invariants they
//! must hold together (I1–I5; see ARCHITECTURE.md).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::schema::{machine_state, machines};
use crate::state::{State, Status};

/// The `machine_state` half of a pair.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[diesel(table_name = machine_state, check_for_backend(diesel::pg::Pg))]
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
    #[diesel(column_name = updated_at)]
    pub state_updated_at: DateTime<Utc>,
}

/// Both rows of one machine as one statement read them.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[diesel(table_name = machines, check_for_backend(diesel::pg::Pg))]
pub struct Pair {
    /// `machines.id`.
    #[diesel(column_name = id)]
    pub machine_id: Uuid,
    /// `machines.status`.
    pub status: String,
    /// `machines.current_process_id`.
    pub current_process_id: Option<Uuid>,
    /// `machines.updated_at`.
    pub updated_at: DateTime<Utc>,
    /// The `machine_state` row, if there is one.
    #[diesel(embed)]
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
        machines::table
            .left_join(machine_state::table)
            .filter(machines::id.eq(machine_id))
            .select(Pair::as_select())
            .first(conn)
            .optional()
    }

    /// Read every pair in one statement (one snapshot), ordered by machine id.
    pub(crate) fn load_all(conn: &mut PgConnection) -> QueryResult<Vec<Pair>> {
        machines::table
            .left_join(machine_state::table)
            .order(machines::id)
            .select(Pair::as_select())
            .load(conn)
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
            let error = state == State::Errored;
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

/// Pairs for the unit tests of the code that reads them.
#[cfg(test)]
pub(crate) mod fixtures {
    use chrono::{DateTime, TimeZone, Utc};
    use uuid::Uuid;

    use super::{Pair, StateRow};

    /// A time of the tests, `seconds` after a fixed instant.
    pub(crate) fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0)
            .single()
            .unwrap_or_default()
    }

    /// The `machine_state` row of a pair that has one.
    pub(crate) fn row(pair: &mut Pair) -> &mut StateRow {
        pair.state
            .as_mut()
            .expect("a pair with a `machine_state` row")
    }

    /// A consistent pair in `state` (with `process` in both rows, and a
    /// failure description in `error`), written at `at(0)`.
    pub(crate) fn pair(state: &str, process: Option<Uuid>) -> Pair {
        Pair {
            machine_id: Uuid::from_u128(1),
            status: state.to_owned(),
            current_process_id: process,
            updated_at: at(0),
            state: Some(StateRow {
                current_state: state.to_owned(),
                process_id: process,
                state_since: at(0),
                is_failure_mode: state == "error",
                failure_description: (state == "error").then(|| "heater tripped".to_owned()),
                state_updated_at: at(0),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::Violation::*;
    use super::fixtures::{at, pair, row};

    const RUN: Uuid = Uuid::from_u128(7);

    #[test]
    fn a_consistent_pair_breaks_nothing() {
        for (state, process) in [
            ("offline", None),
            ("idle", None),
            ("processing", Some(RUN)),
            ("error", None),
        ] {
            assert_eq!(pair(state, process).violations(), [], "{state}");
        }
    }

    #[test]
    fn a_missing_state_row_is_the_only_violation_named() {
        let mut p = pair("idle", None);
        p.state = None;
        assert_eq!(p.violations(), [MissingStateRow]);
    }

    #[test]
    fn each_invariant_is_named_when_broken() {
        let mut p = pair("idle", None);
        row(&mut p).current_state = "processing".to_owned();
        assert_eq!(p.violations(), [StateMismatch]);

        let mut p = pair("processing", Some(RUN));
        row(&mut p).process_id = Some(Uuid::from_u128(8));
        assert_eq!(p.violations(), [ProcessMismatch]);

        assert_eq!(
            pair("idle", Some(RUN)).violations(),
            [ProcessOutsideProcessing]
        );
        assert_eq!(
            pair("processing", None).violations(),
            [ProcessOutsideProcessing]
        );

        let mut p = pair("error", None);
        row(&mut p).failure_description = Some("  ".to_owned());
        assert_eq!(p.violations(), [FailureMode]);
        let mut p = pair("idle", None);
        row(&mut p).is_failure_mode = true;
        assert_eq!(p.violations(), [FailureMode]);

        let mut p = pair("idle", None);
        row(&mut p).state_since = at(1);
        assert_eq!(p.violations(), [Timestamps]);
        assert!(!Timestamps.breaks_state() && StateMismatch.breaks_state());
    }

    #[test]
    fn an_unknown_state_is_named_and_not_judged_further() {
        // The legacy writers' upper-case state: unknown, and a mismatch with
        // the other row, but I3 and I4 are not judged on a state not known.
        let mut p = pair("idle", None);
        p.status = "IDLE".to_owned();
        assert_eq!(p.violations(), [UnknownState, StateMismatch]);
        assert_eq!(pair("running", None).violations(), [UnknownState]);
    }
}
