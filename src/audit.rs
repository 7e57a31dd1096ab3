//! The consistency audit (the legacy "0% inconsistency" check), the repair of
//! diverged pairs, and the search for machines stuck in `processing`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use uuid::Uuid;

use crate::error::Error;
pub use crate::pair::{Pair, StateRow, Violation};
use crate::schema::{machine_state, machines};
use crate::state::State;
use crate::write;

/// What an audit found: every machine whose pair breaks one of I1–I5.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AuditReport {
    /// How many machines there are.
    pub machines: usize,
    /// The machines that break an invariant, with what they break.
    pub diverged: Vec<Finding>,
}

/// One diverged machine.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Finding {
    /// Both rows, as read.
    pub pair: Pair,
    /// The invariants they break.
    pub violations: Vec<Violation>,
}

impl AuditReport {
    /// The share of diverged machines, in percent (0 for no machines).
    pub fn diverged_percent(&self) -> f64 {
        if self.machines == 0 {
            0.0
        } else {
            100.0 * self.diverged.len() as f64 / self.machines as f64
        }
    }

    /// Whether every machine is consistent.
    pub fn is_consistent(&self) -> bool {
        self.diverged.is_empty()
    }
}

/// Every machine's two rows, read in one statement (one snapshot), ordered by
/// machine id (what a fleet listing shows). [`Pair::violations`] tells
/// which of them are diverged.
///
/// # Errors
///
/// [`Error::NotMigrated`] on a database without this crate's tables; database
/// errors otherwise.
pub fn pairs(conn: &mut PgConnection) -> Result<Vec<Pair>, Error> {
    Pair::load_all(conn).map_err(crate::migrations::explain_missing_tables)
}

/// Check every machine against I1–I5, reading all pairs in one statement
/// (one snapshot).
///
/// # Errors
///
/// [`Error::NotMigrated`] on a database without this crate's tables; database
/// errors otherwise.
pub fn audit(conn: &mut PgConnection) -> Result<AuditReport, Error> {
    let pairs = pairs(conn)?;
    let machines = pairs.len();
    let diverged = pairs
        .into_iter()
        .filter_map(|pair| {
            let violations = pair.violations();
            (!violations.is_empty()).then_some(Finding { pair, violations })
        })
        .collect();
    Ok(AuditReport { machines, diverged })
}

/// Which row a repair believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::Display)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[strum(serialize_all = "snake_case")]
pub enum Side {
    /// `machines` (written last, or the only valid one).
    Machines,
    /// `machine_state` (written last, or the only valid one).
    MachineState,
    /// Neither held a usable state: the machine was taken `offline`.
    Neither,
}

/// One repaired (or, in a dry run, repairable) machine.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Repair {
    /// The machine.
    pub machine_id: Uuid,
    /// What the audit found.
    pub violations: Vec<Violation>,
    /// The side believed.
    pub winner: Side,
    /// The state both rows now hold.
    pub state: State,
    /// The process id both rows now hold.
    pub process_id: Option<Uuid>,
    /// The failure description, when the state is `error`.
    pub description: Option<String>,
    /// Whether it was written (false in a dry run, or when the machine changed
    /// while the repair ran: it is then left for the next audit).
    pub applied: bool,
}

/// A failure description for a repaired `error` state that had none.
const LOST_DESCRIPTION: &str = "failure description lost; state restored by repair";

/// Bring every diverged pair back to a consistent one, under this policy:
///
/// 1. **The row written last wins** (`machines.updated_at` against
///    `machine_state.updated_at`; `machines` on a tie): the legacy writers wrote
///    the two rows one after the other, so a crash or a race between the two
///    writes left the newer intent in the row written last.
/// 2. A side is usable only if its state is known and, for `processing`, it
///    names a process; if the winner is not usable, the other side wins.
/// 3. If neither is usable, the machine goes `offline`: nothing runs on it, and
///    an operator must bring it online on purpose.
/// 4. An `error` state keeps `machine_state.failure_description`, or gets a note
///    that it was lost.
///
/// Each repair is one REPEATABLE READ transaction that rewrites both rows only
/// if they still hold what the audit read, and appends a history row of kind
/// `repair` whose `from_state` continues the machine's history. A pair breaking
/// only I5 (timestamps) gets its timestamps realigned the same way.
///
/// With `dry_run`, nothing is written.
///
/// # Errors
///
/// As [`audit`]; a machine that changed while being repaired is skipped
/// (`applied: false`), not an error.
pub fn repair(conn: &mut PgConnection, dry_run: bool) -> Result<Vec<Repair>, Error> {
    let report = audit(conn)?;
    let mut repairs = Vec::with_capacity(report.diverged.len());
    for finding in report.diverged {
        let (winner, state, process_id, description) = decide(&finding.pair);
        let mut repair = Repair {
            machine_id: finding.pair.machine_id,
            violations: finding.violations,
            winner,
            state,
            process_id,
            description,
            applied: false,
        };
        if !dry_run {
            let note = format!(
                "repair: {} won ({})",
                repair.winner,
                repair
                    .violations
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            let repaired = write::Repaired {
                state: repair.state,
                process_id: repair.process_id,
                description: repair.description.as_deref(),
            };
            repair.applied = write::repair(conn, &finding.pair, &repaired, &note)?;
        }
        tracing::info!(
            machine_id = %repair.machine_id, winner = %repair.winner, state = %repair.state,
            applied = repair.applied, "repaired diverged machine"
        );
        repairs.push(repair);
    }
    Ok(repairs)
}

/// The repair policy of [`repair`], for one pair.
fn decide(pair: &Pair) -> (Side, State, Option<Uuid>, Option<String>) {
    let ours = Some((pair.status.as_str(), pair.current_process_id));
    let theirs = pair
        .state
        .as_ref()
        .map(|s| (s.current_state.as_str(), s.process_id));
    let usable = |side: Option<(&str, Option<Uuid>)>| {
        let (state, process) = side?;
        let state = state.parse::<State>().ok()?;
        match (state, process) {
            (State::Processing, None) => None,
            (State::Processing, process) => Some((state, process)),
            (state, _) => Some((state, None)),
        }
    };
    let machines_newer = pair
        .state
        .as_ref()
        .is_none_or(|s| pair.updated_at >= s.state_updated_at);
    let order = if machines_newer {
        [(Side::Machines, ours), (Side::MachineState, theirs)]
    } else {
        [(Side::MachineState, theirs), (Side::Machines, ours)]
    };
    let (winner, state, process_id) = order
        .into_iter()
        .find_map(|(side, value)| usable(value).map(|(state, process)| (side, state, process)))
        .unwrap_or((Side::Neither, State::Offline, None));
    let description = (state == State::Errored).then(|| {
        pair.state
            .as_ref()
            .and_then(|s| s.failure_description.clone())
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| LOST_DESCRIPTION.to_owned())
    });
    (winner, state, process_id, description)
}

/// A machine processing for longer than expected.
#[derive(Clone, Debug, PartialEq, Eq, Queryable)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StuckMachine {
    /// The machine.
    pub machine_id: Uuid,
    /// The run it is processing.
    pub process_id: Option<Uuid>,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// Machines in `processing` (in both rows) since longer than `older_than`
/// ago by the database's clock, oldest first.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a duration too large to express; database
/// errors otherwise.
pub fn stuck(conn: &mut PgConnection, older_than: Duration) -> Result<Vec<StuckMachine>, Error> {
    let micros = i64::try_from(older_than.as_micros())
        .map_err(|_| Error::InvalidInput(format!("duration {older_than:?} is too large")))?;
    let cutoff = diesel::dsl::now.into_sql::<diesel::sql_types::Timestamptz>()
        - PgInterval::from_microseconds(micros);
    machines::table
        .inner_join(machine_state::table)
        .filter(machines::status.eq(State::Processing.as_str()))
        .filter(machine_state::current_state.eq(State::Processing.as_str()))
        .filter(machine_state::state_since.lt(cutoff))
        .order(machine_state::state_since)
        .select((
            machines::id,
            machines::current_process_id,
            machine_state::state_since,
        ))
        .load(conn)
        .map_err(crate::migrations::explain_missing_tables)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::{LOST_DESCRIPTION, Side, decide};
    use crate::pair::fixtures::{at, pair, row};
    use crate::state::State;

    const RUN: Uuid = Uuid::from_u128(7);

    #[test]
    fn the_row_written_last_wins_and_machines_on_a_tie() {
        let mut p = pair("processing", Some(RUN));
        row(&mut p).current_state = "idle".to_owned();
        row(&mut p).process_id = None;
        assert_eq!(
            decide(&p),
            (Side::Machines, State::Processing, Some(RUN), None)
        );
        row(&mut p).state_updated_at = at(1);
        assert_eq!(decide(&p), (Side::MachineState, State::Idle, None, None));
    }

    #[test]
    fn an_unusable_winner_gives_way_to_the_other_side() {
        // `machine_state` is newer, but `processing` without a process is not
        // usable.
        let mut p = pair("idle", None);
        row(&mut p).current_state = "processing".to_owned();
        row(&mut p).state_updated_at = at(1);
        assert_eq!(decide(&p), (Side::Machines, State::Idle, None, None));
    }

    #[test]
    fn with_no_usable_side_the_machine_goes_offline() {
        let mut p = pair("running", None);
        p.state = None;
        assert_eq!(decide(&p), (Side::Neither, State::Offline, None, None));
    }

    #[test]
    fn a_process_id_is_kept_only_in_processing() {
        assert_eq!(
            decide(&pair("idle", Some(RUN))),
            (Side::Machines, State::Idle, None, None)
        );
    }

    #[test]
    fn an_error_keeps_its_description_or_says_it_was_lost() {
        let p = pair("error", None);
        assert_eq!(
            decide(&p),
            (
                Side::Machines,
                State::Errored,
                None,
                Some("heater tripped".to_owned())
            )
        );
        let mut p = pair("error", None);
        row(&mut p).failure_description = Some(" ".to_owned());
        assert_eq!(decide(&p).3.as_deref(), Some(LOST_DESCRIPTION));
        let mut p = pair("error", None);
        p.state = None;
        assert_eq!(decide(&p).3.as_deref(), Some(LOST_DESCRIPTION));
    }
}
