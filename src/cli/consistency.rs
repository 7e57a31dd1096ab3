//! The consistency commands: `audit` (the legacy "0% inconsistency" check),
//! `repair`, `stuck`, and `doctor` (who can reach the tables).

use std::time::Duration;

use diesel::PgConnection;
use machine_state::{AuditReport, Finding};
use serde::Serialize;

use super::error::{CliError, Exit};
use super::output;

/// The audit as `audit --json` prints it.
#[derive(Serialize)]
struct AuditView<'a> {
    #[serde(flatten)]
    report: &'a AuditReport,
    diverged_percent: f64,
}

/// `audit`: every diverged machine and the diverged share; [`Exit::Refused`]
/// when there is any.
pub(crate) fn audit(conn: &mut PgConnection, json: bool) -> Result<Exit, CliError> {
    let report = machine_state::audit(conn)?;
    if json {
        output::json(&AuditView {
            report: &report,
            diverged_percent: report.diverged_percent(),
        })?;
    } else {
        for finding in &report.diverged {
            output::line(describe(finding))?;
        }
        output::line(summary(&report))?;
    }
    Ok(if report.is_consistent() {
        Exit::Success
    } else {
        Exit::Refused
    })
}

/// `2 of 40 machines diverged (5.0% inconsistency)`.
pub(crate) fn summary(report: &AuditReport) -> String {
    format!(
        "{} of {} machines diverged ({} inconsistency)",
        report.diverged.len(),
        report.machines,
        output::percent(report.diverged_percent())
    )
}

/// One diverged machine: what each row says, and the invariants broken.
fn describe(finding: &Finding) -> String {
    format!(
        "{}: {}; {}",
        finding.pair.machine_id,
        finding.pair.sides(),
        finding
            .violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    )
}

/// `repair`: bring diverged machines back under the documented policy.
///
/// [`Exit::Refused`] when a machine was left diverged (it changed while being
/// repaired), or, in a dry run, when anything would be repaired.
pub(crate) fn repair(conn: &mut PgConnection, dry_run: bool, json: bool) -> Result<Exit, CliError> {
    let repairs = machine_state::repair(conn, dry_run)?;
    let left = repairs.iter().filter(|r| !r.applied).count();
    if json {
        output::json(&repairs)?;
    } else {
        for repair in &repairs {
            let process = repair
                .process_id
                .map(|p| format!(" (process {p})"))
                .unwrap_or_default();
            let outcome = match (dry_run, repair.applied) {
                (true, _) => format!("would become `{}`{process}", repair.state),
                (false, true) => format!("is now `{}`{process}", repair.state),
                (false, false) => "changed while being repaired: left for the next audit".into(),
            };
            output::line(format_args!(
                "{}: {} won, {outcome}",
                repair.machine_id, repair.winner
            ))?;
        }
        let summary = if repairs.is_empty() {
            "nothing to repair: no machine is diverged".to_owned()
        } else if dry_run {
            format!("{} diverged machines would be repaired", repairs.len())
        } else {
            format!(
                "repaired {} of {} diverged machines",
                repairs.len() - left,
                repairs.len()
            )
        };
        output::line(summary)?;
    }
    Ok(if left == 0 {
        Exit::Success
    } else {
        Exit::Refused
    })
}

/// `stuck`: machines processing for longer than `older_than`, oldest first.
pub(crate) fn stuck(
    conn: &mut PgConnection,
    older_than: Duration,
    json: bool,
) -> Result<Exit, CliError> {
    let machines = machine_state::stuck(conn, older_than)?;
    if json {
        output::json(&machines)?;
        return Ok(Exit::Success);
    }
    if machines.is_empty() {
        output::line(format_args!(
            "no machine has been processing for longer than {}",
            humantime::format_duration(older_than)
        ))?;
    }
    for machine in &machines {
        output::line(format_args!(
            "{}  process {}  since {} ({} ago)",
            machine.machine_id,
            output::or_dash(machine.process_id),
            output::time(machine.since),
            output::ago(machine.since)
        ))?;
    }
    Ok(Exit::Success)
}

/// `doctor`: everything that exposes the tables and functions, and whether
/// enforcement is on; [`Exit::Refused`] when anything is exposed.
pub(crate) fn doctor(conn: &mut PgConnection, json: bool) -> Result<Exit, CliError> {
    let report = machine_state::doctor(conn)?;
    if json {
        output::json(&report)?;
    } else {
        for exposure in &report.exposures {
            output::line(format_args!("exposed: {exposure}"))?;
        }
        let enforcement = match report.enforcement {
            Some(true) => "on",
            Some(false) => {
                "off (`SELECT machine_state_enforce_invariants();` once the audit shows 0%)"
            }
            None => "unknown (this role may not ask)",
        };
        output::line(format_args!("enforcement: {enforcement}"))?;
        output::line(if report.is_exposed() {
            format!("{} exposure(s) found", report.exposures.len())
        } else {
            "nothing exposed".to_owned()
        })?;
    }
    Ok(if report.is_exposed() {
        Exit::Refused
    } else {
        Exit::Success
    })
}

/// `prune-history`: the retention of the history.
pub(crate) fn prune_history(
    conn: &mut PgConnection,
    older_than: Duration,
    batch: u32,
) -> Result<Exit, CliError> {
    let deleted = machine_state::prune_history(conn, older_than, batch)?;
    output::line(format_args!(
        "deleted {deleted} history entries older than {} (each machine's latest kept)",
        humantime::format_duration(older_than)
    ))?;
    Ok(Exit::Success)
}
