//! `demo`: the legacy race, reproduced, then the same workload through this
//! crate.
//!
//! In a throwaway database (on a throwaway embedded server, or created on the
//! `--database-url`'s server, so the user's machines are never touched),
//! `--machines` machines are shared by `--workers` threads, a third each of
//! recipe starters, executors and stoppers, for `--seconds`:
//!
//! 1. with the legacy writer ([`super::legacy`]: two separate writes with the
//!    work between them), while the library's
//!    [`audit`](machine_state::audit) measures the diverged share every
//!    200 ms, and once more at the end;
//! 2. [`repair`](machine_state::repair) brings the diverged machines back;
//! 3. with this crate (load, the same work, one guarded transition), and the
//!    audit again, which must find 0%.
//!
//! Both runs do the same work with the same pauses; the only difference is
//! the write.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use machine_state::{Action, AnyMachine, AuditReport, Error, Idle, Machine, Offline, Pool};
use uuid::Uuid;

use super::args::DemoArgs;
use super::consistency::summary;
use super::database::Database;
use super::error::{CliError, Exit, one_line};
use super::legacy;
use super::output;

/// The failure description of a failed recipe run.
pub const FAILURE: &str = "recipe failed: chamber pressure out of range (demo)";

/// What a worker does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Starts recipe runs on offline or idle machines.
    Starter,
    /// Runs the recipe of a processing machine, then completes it (or, one
    /// time in 20, fails it).
    Executor,
    /// Aborts processing machines, and resets machines in error (a user).
    Stopper,
}

impl Role {
    const ALL: [Role; 3] = [Role::Starter, Role::Executor, Role::Stopper];
}

/// What one worker step came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The machine was changed.
    Applied,
    /// The machine had moved on since it was read: nothing written.
    Refused,
    /// The machine was in no state this role acts on.
    NothingToDo,
    /// The run's deadline passed during the work: the worker was stopped
    /// there, as a crash or a deploy stops a service wherever it is (for
    /// the legacy writer, between its two writes).
    Interrupted,
}

/// The simulated work of each role: the same pauses in both runs, until
/// the run's deadline.
pub struct Workload {
    deadline: Instant,
}

impl Workload {
    /// Whether the run is over: a worker that finds it so after its work
    /// stops right there, writing nothing more.
    pub fn stopped(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The work a role does after deciding and before its first write: the
    /// recipe run, for an executor.
    pub fn before(&self, role: Role) {
        if role == Role::Executor {
            pause(2_000);
        }
    }

    /// The work the legacy components did between their two writes:
    /// dispatching the recipe to the tool, reporting its end, relaying an
    /// abort. This crate does it before its one write.
    pub fn between(&self, role: Role) {
        match role {
            Role::Starter => pause(1_000),
            Role::Executor => pause(500),
            Role::Stopper => pause(500),
        }
    }

    /// Whether this recipe run fails (one in 20).
    pub fn recipe_fails(&self) -> bool {
        fastrand::u8(0..20) == 0
    }

    /// A user's pause between two looks at a machine.
    fn think(&self, role: Role) {
        if role == Role::Stopper {
            pause(3_000);
        }
    }
}

/// Sleep a random time up to `max_micros`.
fn pause(max_micros: u64) {
    thread::sleep(Duration::from_micros(fastrand::u64(0..=max_micros)));
}

/// `demo`: run both workloads and print what the audit finds after each.
///
/// # Errors
///
/// The throwaway database cannot be created, or the database fails; a worker's
/// failed step is counted and reported, not an error.
pub fn run(database: &Database, args: &DemoArgs, show_progress: bool) -> Result<Exit, CliError> {
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
struct Plan {
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

    let repairs = machine_state::repair(conn, false)?;
    let repaired = repairs.iter().filter(|r| r.applied).count();
    output::line(format_args!(
        "repair (the row written last wins): {repaired} machines repaired, each recorded in the history"
    ))?;
    output::line(format_args!(
        "  audit after repair: {}",
        summary(&machine_state::audit(conn)?)
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

/// One step of a worker with this crate: load the machine, decide, do the
/// same work as the legacy worker, then one guarded transition.
fn crate_step(
    conn: &mut PgConnection,
    role: Role,
    id: Uuid,
    work: &Workload,
) -> Result<Step, Error> {
    let machine = AnyMachine::load(conn, id)?;
    let action = match (role, &machine) {
        (Role::Starter, AnyMachine::Offline(_) | AnyMachine::Idle(_)) => {
            Action::Start(Uuid::new_v4())
        }
        (Role::Executor, AnyMachine::Processing(_)) if work.recipe_fails() => {
            Action::Fail(FAILURE.to_owned())
        }
        (Role::Executor, AnyMachine::Processing(_)) => Action::Complete,
        (Role::Stopper, AnyMachine::Processing(_)) => Action::Stop,
        (Role::Stopper, AnyMachine::Errored(_)) => Action::Reset,
        _ => return Ok(Step::NothingToDo),
    };
    work.before(role);
    work.between(role);
    if work.stopped() {
        return Ok(Step::Interrupted);
    }
    match machine.perform(conn, &action) {
        Ok(_) => Ok(Step::Applied),
        Err(refused) => match refused.error {
            Error::Conflict { .. } | Error::RetriesExhausted { .. } => Ok(Step::Refused),
            error => Err(error),
        },
    }
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
struct Tally {
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

/// How often the audit runs while the workers do.
const AUDIT_EVERY: Duration = Duration::from_millis(200);

/// One worker step on a connection; a failure is described in one line.
type StepFn<'a> = dyn Fn(&mut PgConnection, Role, &Workload) -> Result<Step, String> + Sync + 'a;

/// Run `plan.workers` threads, each with a connection of its own and a role,
/// calling `step` until `plan.duration` is over, while `monitor` audits every
/// [`AUDIT_EVERY`] (as the legacy "monitor consistency" step did on the live
/// system) and a progress bar shows the count.
fn run_workers(
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
                running.push(machine_state::audit(monitor)?.diverged_percent());
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
        end: machine_state::audit(monitor)?,
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
fn progress_bar(show: bool, len: u64, prefix: &str, counter: &str) -> ProgressBar {
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

/// A throwaway database holding the demo's machines, on the same server as
/// the command's database, dropped at the end (also when the demo fails
/// half-way).
struct Sandbox {
    /// The command's database, to create and drop the sandbox from.
    admin_url: String,
    /// The sandbox's URL.
    url: String,
    name: String,
    /// `--pooler`, if given.
    mode: Option<machine_state::ConnectionMode>,
    dropped: bool,
}

impl Sandbox {
    /// Create the database and apply the migrations to it.
    ///
    /// # Errors
    ///
    /// The server refuses `CREATE DATABASE` (the role needs `CREATEDB`), or
    /// the URL cannot be pointed at the new database: the legacy writer never
    /// runs anywhere else.
    fn create(database: &Database) -> Result<Sandbox, CliError> {
        let name = format!("machine_state_demo_{:08x}", fastrand::u32(..));
        let admin = &mut database.connect()?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|source| CliError::Demo {
                what: format!("cannot create the throwaway database `{name}`"),
                source: Box::new(Error::Database(source)),
            })?;
        let sandbox = Sandbox {
            admin_url: database.url().to_owned(),
            url: with_database(database.url(), &name),
            name,
            mode: database.mode(),
            dropped: false,
        };
        let conn = &mut plain_connection(&sandbox.url)?;
        let current: String = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
            "current_database()",
        ))
        .get_result(conn)
        .map_err(Error::from)?;
        if current != sandbox.name {
            return Err(CliError::Input(format!(
                "cannot point the database URL at the throwaway database `{}` (it reaches \
                 `{current}`): give the URL as `postgresql://...` or as `key=value` pairs",
                sandbox.name
            )));
        }
        machine_state::run_migrations(conn)?;
        Ok(sandbox)
    }

    /// A pool for `workers` workers (and the audit); REPEATABLE READ by
    /// default for this crate's run, as [`machine_state::pool`] does, and the
    /// server's default for the legacy one.
    fn pool(&self, workers: u32, repeatable_read: bool) -> Result<Pool, CliError> {
        let manager = machine_state::Manager::new(&self.url)?;
        // Without the startup option, sessions keep the server's default.
        let manager = match (repeatable_read, self.mode) {
            (false, _) => manager.mode(machine_state::ConnectionMode::TransactionPooler),
            (true, Some(mode)) => manager.mode(mode),
            (true, None) => manager,
        };
        machine_state::pool_builder()
            .max_size(workers + 1)
            .min_idle(None)
            .build(manager)
            .map_err(|e| CliError::Library(Error::Pool(e)))
    }

    /// Drop the database, reporting a failure.
    fn drop_database(mut self) -> Result<(), CliError> {
        self.dropped = true;
        let conn = &mut plain_connection(&self.admin_url)?;
        conn.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .map_err(Error::from)?;
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.dropped {
            let dropped = plain_connection(&self.admin_url).map(|mut conn| {
                conn.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            });
            if !matches!(dropped, Ok(Ok(()))) {
                tracing::warn!(database = %self.name, "could not drop the demo's database");
            }
        }
    }
}

/// `url` pointed at the database `name`: libpq takes the last value given
/// for a keyword, in a URL's query (`?dbname=`) as in `key=value` pairs.
fn with_database(url: &str, name: &str) -> String {
    if url.starts_with("postgresql://") || url.starts_with("postgres://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}dbname={name}")
    } else {
        format!("{url} dbname={name}")
    }
}

/// A connection with the server's defaults (no startup option, the
/// pooler switch taken out of the URL), for the sandbox's bookkeeping.
fn plain_connection(url: &str) -> Result<PgConnection, Error> {
    machine_state::Manager::new(url)?
        .mode(machine_state::ConnectionMode::TransactionPooler)
        .establish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_pointed_at_another_database_by_its_last_dbname() {
        assert_eq!(
            with_database("postgresql://u@h/factory", "d"),
            "postgresql://u@h/factory?dbname=d"
        );
        assert_eq!(
            with_database("postgres://u@/f?host=/tmp&port=5432", "d"),
            "postgres://u@/f?host=/tmp&port=5432&dbname=d"
        );
        assert_eq!(
            with_database("host=h dbname=factory", "d"),
            "host=h dbname=factory dbname=d"
        );
    }
}
