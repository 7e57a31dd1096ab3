//! `demo`: the legacy race, reproduced, then the same workload through this
//! crate.
//!
//! In a throwaway database (on a throwaway embedded server, or created on the
//! `--database-url`'s server, so the user's machines are never touched),
//! `--machines` machines are shared by `--workers` threads, a third each of
//! recipe starters, executors and stoppers, for `--seconds`:
//!
//! 1. with the legacy writer ([`legacy`]: two separate writes with the
//!    work between them), while the library's
//!    [`audit`](machine_state::audit::audit) measures the diverged share every
//!    200 ms, and once more at the end;
//! 2. [`repair`](machine_state::audit::repair) brings the diverged machines back;
//! 3. with this crate (load, the same work, one guarded transition), and the
//!    audit again, which must find 0%.
//!
//! Both runs do the same work with the same pauses; the only difference is
//! the write.

mod guarded;
mod legacy;
mod sandbox;
mod workers;
mod workload;

use std::time::Duration;

use diesel::prelude::*;
use machine_state::audit::AuditReport;
use machine_state::{Error, Idle, Machine, Offline};
use uuid::Uuid;

use super::args::DemoArgs;
use super::consistency::summary;
use super::database::Database;
use super::error::{CliError, Exit, one_line};
use super::output;
use guarded::crate_step;
use sandbox::Sandbox;
use workers::{progress_bar, run_workers};

/// `demo`: run both workloads and print what the audit finds after each.
///
/// # Errors
///
/// The throwaway database cannot be created, or the database fails; a worker's
/// failed step is counted and reported, not an error.
pub(crate) fn run(
    database: &Database,
    args: &DemoArgs,
    show_progress: bool,
) -> Result<Exit, CliError> {
    let sandbox = Sandbox::create(database)?;
    let seconds = Duration::from_secs_f64(args.seconds);
    let w = args.workers;
    output::line(format_args!(
        "demo: {} machines, {w} workers ({}, {}, {}), {} per run",
        args.machines,
        count(w.div_ceil(3), "starter"),
        count((w + 1) / 3, "executor"),
        count(w / 3, "stopper"),
        humantime::format_duration(seconds),
    ))?;
    let place = if database.is_embedded() {
        "a throwaway embedded server"
    } else {
        "the database's server"
    };
    output::line(format_args!(
        "      in the throwaway database `{}` on {place} (dropped at the end)\n",
        sandbox.name
    ))?;
    let plan = Plan {
        workers: args.workers,
        duration: seconds,
        show_progress,
    };
    let exit = compare(&sandbox, args.machines, plan)?;
    sandbox.drop_database()?;
    Ok(exit)
}

/// `3 starters`, `1 starter`.
fn count(n: u32, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The shape of both runs.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    workers: u32,
    duration: Duration,
    show_progress: bool,
}

/// The two runs, the audits and the repair between them.
fn compare(sandbox: &Sandbox, machines: u32, plan: Plan) -> Result<Exit, CliError> {
    let legacy_pool = sandbox.pool(plan.workers, false)?;
    let crate_pool = sandbox.pool(plan.workers, true)?;
    let conn = &mut crate_pool.get().map_err(Error::from)?;
    let ids = create_machines(conn, machines, plan.show_progress)?;

    let legacy = run_workers("legacy", plan, &legacy_pool, conn, &|conn, role, work| {
        legacy::step(conn, role, pick(&ids), work).map_err(|e| one_line(&e))
    })?;
    output::line(format_args!(
        "legacy two-write pattern: {} transitions ({:.0}/s), none refused",
        legacy.applied,
        legacy.per_second()
    ))?;
    output::line(format_args!(
        "  stopped at the deadline wherever they were, as by a crash or a deploy: {} between \
         their two writes",
        count(legacy.interrupted as u32, "worker")
    ))?;
    legacy.report()?;

    let repairs = machine_state::audit::repair(conn, false)?;
    let repaired = repairs.iter().filter(|r| r.applied).count();
    output::line(format_args!(
        "repair (the row written last wins): {repaired} machines repaired, each recorded in the history"
    ))?;
    output::line(format_args!(
        "  audit after repair: {}",
        summary(&machine_state::audit::audit(conn)?)
    ))?;

    let ours = run_workers("crate", plan, &crate_pool, conn, &|conn, role, work| {
        crate_step(conn, role, pick(&ids), work).map_err(|e| one_line(&e))
    })?;
    output::line(format_args!(
        "machine-state crate: {} transitions ({:.0}/s), {} refused as stale (nothing written)",
        ours.applied,
        ours.per_second(),
        ours.refused
    ))?;
    output::line(format_args!(
        "  stopped at the deadline wherever they were, as by a crash or a deploy: {} before \
         their one write",
        count(ours.interrupted as u32, "worker")
    ))?;
    ours.report()?;

    output::line("")?;
    output::line(format_args!(
        "{:<20}{:>18}{:>12}{:>15}{:>18}",
        "", "diverged, running", "at the end", "transitions/s", "refused as stale"
    ))?;
    let row = |name: &str, run: &Tally, refused: String| {
        format!(
            "{name:<20}{:>18}{:>12}{:>15.0}{refused:>18}",
            output::percent(run.mean_diverged()),
            output::percent(run.end.diverged_percent()),
            run.per_second()
        )
    };
    output::line(row("legacy two writes", &legacy, "-".into()))?;
    output::line(row("machine-state", &ours, ours.refused.to_string()))?;
    Ok(if ours.is_consistent() {
        Exit::Success
    } else {
        Exit::Refused
    })
}

/// A random machine.
fn pick(ids: &[Uuid]) -> Uuid {
    ids[fastrand::usize(..ids.len())]
}

/// Register the demo's machines (one in four offline, the rest idle).
fn create_machines(
    conn: &mut PgConnection,
    count: u32,
    show_progress: bool,
) -> Result<Vec<Uuid>, CliError> {
    let bar = progress_bar(show_progress, u64::from(count), "machines", "{pos}/{len}");
    let mut ids = Vec::with_capacity(count as usize);
    for i in 0..count {
        let id = Uuid::new_v4();
        if i % 4 == 0 {
            Machine::<Offline>::create(conn, id)?;
        } else {
            Machine::<Idle>::create(conn, id)?;
        }
        ids.push(id);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(ids)
}

/// What one run did, and what the audits saw.
pub(super) struct Tally {
    applied: u64,
    refused: u64,
    /// Workers stopped by the deadline in the middle of a step.
    interrupted: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    /// The diverged share found by each audit taken while the workers ran.
    running: Vec<f64>,
    /// The audit once the workers had stopped.
    end: AuditReport,
}

impl Tally {
    fn per_second(&self) -> f64 {
        self.applied as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The mean diverged share seen while the workers ran.
    fn mean_diverged(&self) -> f64 {
        self.running.iter().sum::<f64>() / self.running.len().max(1) as f64
    }

    /// Whether no audit, running or at the end, found a diverged machine.
    fn is_consistent(&self) -> bool {
        self.end.is_consistent() && self.running.iter().all(|&share| share == 0.0)
    }

    /// The audits' findings; failed steps (not expected) on stderr.
    fn report(&self) -> Result<(), CliError> {
        if let Some(error) = &self.first_error {
            eprintln!(
                "warning: {} worker steps failed, the first with: {error}",
                self.errors
            );
        }
        let max = self.running.iter().copied().fold(0.0, f64::max);
        output::line(format_args!(
            "  audits while running: {} of the machines diverged on average, {} at most ({})",
            output::percent(self.mean_diverged()),
            output::percent(max),
            count(self.running.len() as u32, "audit")
        ))?;
        output::line(format_args!("  audit at the end: {}", summary(&self.end)))?;
        let state_level = self
            .end
            .diverged
            .iter()
            .filter(|f| f.violations.iter().any(|v| v.breaks_state()))
            .count();
        if !self.end.is_consistent() {
            output::line(format_args!(
                "    {state_level} on state or process (I1–I4), {} on timestamps only (I5)",
                self.end.diverged.len() - state_level
            ))?;
        }
        Ok(())
    }
}
