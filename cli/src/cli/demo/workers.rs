//! The worker threads of one run, the audits taken while they run, and the
//! progress bar.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use machine_state::{Error, Pool};

use super::workload::{Role, Step, Workload};
use super::{Plan, Tally};
use crate::cli::error::CliError;

/// How often the audit runs while the workers do.
pub(super) const AUDIT_EVERY: Duration = Duration::from_millis(200);

/// One worker step on a connection; a failure is described in one line.
pub(super) type StepFn<'a> =
    dyn Fn(&mut PgConnection, Role, &Workload) -> Result<Step, String> + Sync + 'a;

/// Run `plan.workers` threads, each with a connection of its own and a role,
/// calling `step` until `plan.duration` is over, while `monitor` audits every
/// [`AUDIT_EVERY`] (as the legacy "monitor consistency" step did on the live
/// system) and a progress bar shows the count.
pub(super) fn run_workers(
    name: &str,
    plan: Plan,
    pool: &Pool,
    monitor: &mut PgConnection,
    step: &StepFn<'_>,
) -> Result<Tally, CliError> {
    let conns = (0..plan.workers)
        .map(|_| pool.get())
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::from)?;
    let counts = Counts::default();
    let bar = progress_bar(
        plan.show_progress,
        plan.duration.as_millis() as u64,
        name,
        "{msg}",
    );
    let started = Instant::now();
    let work = Workload {
        deadline: started + plan.duration,
    };
    let running = thread::scope(|scope| {
        for (i, mut conn) in conns.into_iter().enumerate() {
            let role = Role::ALL[i % 3];
            let (counts, work) = (&counts, &work);
            scope.spawn(move || {
                while !work.stopped() {
                    counts.add(step(&mut conn, role, work));
                    work.think(role);
                }
            });
        }
        let mut running = Vec::new();
        let mut next_audit = started + AUDIT_EVERY / 2;
        while !work.stopped() {
            thread::sleep(Duration::from_millis(50));
            if Instant::now() >= next_audit && !work.stopped() {
                running.push(machine_state::audit::audit(monitor)?.diverged_percent());
                next_audit += AUDIT_EVERY;
            }
            bar.set_position(started.elapsed().as_millis() as u64);
            let applied = counts.applied.load(Ordering::Relaxed);
            bar.set_message(format!("{applied} transitions"));
        }
        Ok::<_, Error>(running)
    })?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(Tally {
        applied: counts.applied.into_inner(),
        refused: counts.refused.into_inner(),
        interrupted: counts.interrupted.into_inner(),
        errors: counts.errors.into_inner(),
        first_error: counts
            .first_error
            .into_inner()
            .unwrap_or_else(|e| e.into_inner()),
        elapsed,
        running,
        end: machine_state::audit::audit(monitor)?,
    })
}

/// The workers' shared counters.
#[derive(Default)]
struct Counts {
    applied: AtomicU64,
    refused: AtomicU64,
    interrupted: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Counts {
    fn add(&self, step: Result<Step, String>) {
        let counter = match step {
            Ok(Step::Applied) => &self.applied,
            Ok(Step::Refused) => &self.refused,
            Ok(Step::Interrupted) => &self.interrupted,
            Ok(Step::NothingToDo) => return,
            Err(error) => {
                let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert(error);
                &self.errors
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A progress bar on stderr, hidden when asked (logs would garble it) or
/// when stderr is not a terminal.
pub(super) fn progress_bar(show: bool, len: u64, prefix: &str, counter: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len).with_prefix(prefix.to_owned());
    let template = format!("{{prefix:>8}} [{{bar:30}}] {counter}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
