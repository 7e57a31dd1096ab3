//! The consistency commands: `audit` (the legacy "0% inconsistency" check),
//! `repair`, `stuck`, and `doctor` (who can reach the tables).

use std::time::Duration;

use diesel::PgConnection;
use machine_state::audit::{AuditReport, Finding};
use machine_state::doctor::{AppliedFix, SecurityReport};
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
    let report = machine_state::audit::audit(conn)?;
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
    let repairs = machine_state::audit::repair(conn, dry_run)?;
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
    let machines = machine_state::audit::stuck(conn, older_than)?;
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

/// `doctor`: everything that exposes the tables and functions, each with its
/// fix, whether the services are locked out, and whether enforcement is on;
/// [`Exit::Refused`] when anything is found. With `fix`, the fixes are applied
/// first (and the report is of what is left); with `undo_fix`, they are
/// undone first.
pub(crate) fn doctor(
    conn: &mut PgConnection,
    json: bool,
    fix: bool,
    undo_fix: bool,
    options: &machine_state::MigrationOptions,
) -> Result<Exit, CliError> {
    let applied = if fix {
        machine_state::doctor::fix_exposures_with(conn, options)?
    } else {
        Vec::new()
    };
    let undone = if undo_fix {
        machine_state::doctor::undo_fixes_with(conn, options)?
    } else {
        Vec::new()
    };
    let report = machine_state::doctor::doctor(conn)?;
    if json {
        output::json(&DoctorView {
            report: &report,
            applied: &applied,
            undone: &undone,
        })?;
    } else {
        for fix in &applied {
            output::line(format_args!("fixed: {}", fix.finding))?;
            for statement in &fix.statements {
                output::line(format_args!("  {statement};"))?;
            }
        }
        for statement in &undone {
            output::line(format_args!("undone: {statement};"))?;
        }
        if undo_fix && undone.is_empty() {
            output::line("no fix to undo")?;
        }
        for exposure in &report.exposures {
            output::line(format_args!("exposed: {exposure}"))?;
            for statement in &exposure.fix {
                output::line(format_args!("  fix: {statement};"))?;
            }
        }
        if let Some(locked_out) = &report.locked_out {
            output::line(format_args!("locked out: {locked_out}"))?;
            output::line(format_args!(
                "  fix: `machine-state grant {}` (or, as the owner, `{}`)",
                locked_out.role, locked_out.sql
            ))?;
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
            format!(
                "{} exposure(s) found: `machine-state doctor --fix` applies the fixes above",
                report.exposures.len()
            )
        } else {
            "nothing exposed".to_owned()
        })?;
    }
    Ok(if report.is_clean() {
        Exit::Success
    } else {
        Exit::Refused
    })
}

/// `doctor --json`: the report, and what `--fix` / `--undo-fix` ran.
#[derive(Serialize)]
struct DoctorView<'a> {
    #[serde(flatten)]
    report: &'a SecurityReport,
    applied: &'a [AppliedFix],
    undone: &'a [String],
}

/// `grant ROLE`: `machine_state_grant_application`, printing what it granted.
pub(crate) fn grant(conn: &mut PgConnection, role: &str) -> Result<Exit, CliError> {
    let statements = machine_state::doctor::grant_application(conn, role)?;
    for statement in &statements {
        output::line(format_args!("{statement};"))?;
    }
    if statements.is_empty() {
        output::line(format_args!("`{role}` had every grant already"))?;
    }
    Ok(Exit::Success)
}

/// `revoke ROLE`: `machine_state_revoke_application`, printing what it took
/// back.
pub(crate) fn revoke(conn: &mut PgConnection, role: &str) -> Result<Exit, CliError> {
    let statements = machine_state::doctor::revoke_application(conn, role)?;
    for statement in &statements {
        output::line(format_args!("{statement};"))?;
    }
    if statements.is_empty() {
        output::line(format_args!(
            "nothing was granted to `{role}` through `grant`"
        ))?;
    }
    Ok(Exit::Success)
}

/// `prune-history`: the retention of the history.
pub(crate) fn prune_history(
    conn: &mut PgConnection,
    older_than: Duration,
    batch: u32,
    prepare_days: u32,
    options: &machine_state::MigrationOptions,
) -> Result<Exit, CliError> {
    let deleted = machine_state::history::prune_history_with(conn, older_than, batch, options)?;
    output::line(format_args!(
        "deleted {deleted} history entries older than {} (each machine's latest kept)",
        humantime::format_duration(older_than)
    ))?;
    let prepared = machine_state::history::prepare_history_with(conn, prepare_days, options)?;
    output::line(format_args!(
        "prepared {} daily partitions up to {prepare_days} days ahead{}{}",
        prepared.len(),
        if prepared.is_empty() { "" } else { ": " },
        prepared.join(", ")
    ))?;
    Ok(Exit::Success)
}
