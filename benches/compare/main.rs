//! `cargo bench --bench compare`: the crate's transitions side by side with
//! the fastest SQL a person could hand-write, run by `pgbench` on the same
//! server and the same machines, in one invocation.
//!
//! It starts a private PostgreSQL server (durable: `fsync` and
//! `synchronous_commit` on, `pg_stat_statements` loaded), seeds 1000 idle
//! machines, and then runs, interleaved over several rounds, every path in
//! four scenarios (1 and 4 connections; durable commits and
//! `synchronous_commit=off` per session):
//!
//! - `pgbench/function`: one statement calling `machine_state_transition`;
//! - `pgbench/cte`: one statement with two guarded data-modifying CTEs and the
//!   history insert;
//! - `pgbench/explicit_tx`: `BEGIN REPEATABLE READ`, two guarded updates, the
//!   history insert, `COMMIT` (the SQL of the query-builder path, prepared);
//! - `pgbench/legacy_two_write`: the legacy baseline, two blind autocommit
//!   updates;
//! - `pgbench/select_1`: a bare round trip;
//! - `crate/default`: `Machine::start` / `complete` through a pool checkout;
//! - `crate/query_builder`: a hand-written diesel DSL transaction;
//! - `crate/sql_function`: the default path with `WritePath::SqlFunction`.
//!
//! Every path runs the same walk over the machines (start a recipe on each of
//! a client's machines, then complete each), every pgbench session and every
//! pool connection defaults to REPEATABLE READ, and after every run the
//! machines and the history are checked: a broken path is never timed.
//! Ratios are computed within a round (each path of a round ran minutes
//! apart at most), then the median over rounds is reported.
//!
//! Then the default path through PgBouncer 1.18 in transaction mode (a role
//! defaulting to REPEATABLE READ, and a plain one) next to the same path
//! direct: statements and round trips per transition, latency ratio
//! (`pooler.rs`; needs `pgbouncer` installed).
//!
//! Then the scenarios of issue 13, each printing its ratios against its
//! target (✔/✘) in one table at the top of the output, with the server's
//! evidence (`pg_stat_statements`, `pg_walinspect`, `EXPLAIN`) beside it:
//!
//! - (c) the SQL function (`pgbench/function`, and `crate/sql_function`:
//!   `WritePath::SqlFunction`) against the crate's statement, from the main
//!   scenarios' runs, and what the server spends inside the function
//!   (`function.rs`);
//! - (b) through a delay proxy of about 1 ms round trip (`proxy.rs`,
//!   `delay.rs`): the default path, the legacy two-write, pgbench's floor,
//!   and client-side time;
//! - (a) transitions over a history pre-filled to 5M, 20M and 50M rows
//!   against an empty one, in two regimes (a checkpoint before each run, or
//!   before each sweep: every machine's first write since the latest
//!   checkpoint): p50 and WAL per transition; then the time and WAL of
//!   pruning the oldest 10M rows (`history.rs`);
//! - (d) the hot spot, 8 workers on one machine, the crate against pgbench
//!   running the same REPEATABLE READ transition with `--max-tries`
//!   (`hotspot.rs`);
//! - (e) `audit`, `pairs` (`list`) and `stuck` over 100,000 machines, and
//!   `stuck`'s plan (`fleet.rs`).
//!
//! Output: the tables on stdout, and `target/bench-compare/results.md` and
//! `target/bench-compare/latency.svg` (latency distribution per path).
//!
//! Options (after `--`): `--quick` (3 rounds, a history of 1M and 4M rows, 2 s
//! hot spot rounds: a few minutes), `--rounds N` (default 7, at least 3),
//! `--hot-seconds S` (default 3), `--history-rows A,B,...` (default
//! `5000000,20000000,50000000`), `--no-durable` (skip the durable main scenarios),
//! `--only PARTS` (comma-separated: `main`, `pooler`, `delay`, `history`,
//! `hot`, `fleet`), `--pooler-only` (`--only pooler`). Exit status: 0 when
//! every correctness check passed (timing targets are reported, not
//! enforced: they depend on the machine), 1 when one failed, 2 on error (a
//! path that did not do its work is an error).

#![allow(
    unreachable_pub,
    reason = "a bench binary's modules share items with `pub`; none is reachable from outside"
)]

#[path = "../common/mod.rs"]
mod common;
mod delay;
mod fleet;
mod function;
mod goal;
mod history;
mod hotspot;
mod pgbench;
mod pooler;
mod proxy;
mod report;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Double, Text};
use machine_state::EmbeddedPostgres;

/// The number of machines of the latency and throughput runs.
const MACHINES: u32 = 1000;

/// A path, measured by pgbench or by this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    Select1,
    Function,
    Cte,
    ExplicitTx,
    Legacy,
    Default,
    QueryBuilder,
    /// The crate with `WritePath::SqlFunction`.
    CrateFunction,
}

impl Path {
    pub const ALL: [Path; 8] = [
        Path::Select1,
        Path::Function,
        Path::Cte,
        Path::ExplicitTx,
        Path::Legacy,
        Path::Default,
        Path::QueryBuilder,
        Path::CrateFunction,
    ];

    /// A short name, also the pgbench script's file name.
    pub fn name(self) -> &'static str {
        match self {
            Path::Select1 => "select_1",
            Path::Function => "function",
            Path::Cte => "cte",
            Path::ExplicitTx => "explicit_tx",
            Path::Legacy => "legacy_two_write",
            Path::Default => "default",
            Path::QueryBuilder => "query_builder",
            Path::CrateFunction => "sql_function",
        }
    }

    /// The name in tables: who runs it, and what.
    pub fn label(self) -> String {
        let runner = if self.is_pgbench() {
            "pgbench"
        } else {
            "crate"
        };
        format!("{runner}/{}", self.name())
    }

    pub fn is_pgbench(self) -> bool {
        !matches!(
            self,
            Path::Default | Path::QueryBuilder | Path::CrateFunction
        )
    }

    /// Whether each transaction appends a history row.
    fn writes_history(self) -> bool {
        !matches!(self, Path::Select1 | Path::Legacy)
    }
}

/// Who runs what in one scenario.
///
/// Client `c` of `C` owns machines `c + 1`, `c + 1 + C`, ... (`MACHINES / C`
/// of them). A run walks a window of them, starting at `offset`: a sweep
/// starts a recipe on each machine of the window, the next sweep completes
/// them, so every run leaves every machine idle. A run walks a quarter of
/// the machines (an eighth when durable: commits wait for the disk), the
/// window moving on each round.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Durable commits, or `synchronous_commit=off` for the sessions.
    pub durable: bool,
    pub clients: u32,
    pub machines_per_client: u32,
    /// Machines per client walked in a run.
    pub window: u32,
    /// Where a run's window starts (changes each round).
    pub offset: u32,
    pub transactions_per_client: u32,
    /// pgbench's `-j` is `min(clients, cores)`.
    pub cores: u32,
    /// 1 when the run's first sweep completes recipes (a run of one sweep,
    /// [`Plan::sweep`]).
    pub first_sweep: u32,
}

impl Plan {
    fn new(durable: bool, clients: u32, cores: u32) -> Plan {
        let machines_per_client = MACHINES / clients;
        // Short runs, many rounds: noise from the rest of the machine comes in
        // bursts, and alternating paths quickly spreads it over all of them.
        let window = if durable {
            machines_per_client / 8
        } else {
            machines_per_client / 4
        };
        // With one connection, one sweep each way; with more, two.
        let cycles = if clients > 1 { 2 } else { 1 };
        Plan {
            durable,
            clients,
            machines_per_client,
            window,
            offset: 0,
            transactions_per_client: 2 * window * cycles,
            cores,
            first_sweep: 0,
        }
    }

    /// One sweep of this plan's (first, then second): starts a recipe on each
    /// machine of the window (`which` 0), or completes each (1).
    fn sweep(self, which: u32) -> Plan {
        Plan {
            transactions_per_client: self.window,
            first_sweep: which,
            ..self
        }
    }

    /// This plan in round `round`: the window moves on.
    fn in_round(self, round: usize) -> Plan {
        Plan {
            offset: (round as u32 * self.window) % self.machines_per_client,
            ..self
        }
    }

    /// The `j`-th machine of `client`'s window (machines are numbered from 1).
    pub fn machine(&self, client: u32, j: u32) -> u32 {
        client + 1 + ((self.offset + j) % self.machines_per_client) * self.clients
    }

    /// Whether a client's `k`-th transaction (from 0) starts a recipe (or
    /// completes one).
    pub fn starts(&self, k: u32) -> bool {
        (k / self.window + self.first_sweep).is_multiple_of(2)
    }

    pub fn transactions(&self) -> usize {
        (self.clients * self.transactions_per_client) as usize
    }

    pub fn label(&self) -> String {
        format!(
            "{} conn, {}",
            self.clients,
            if self.durable { "durable" } else { "sync off" }
        )
    }
}

/// What one run measured.
pub struct Measured {
    /// Per transaction, in µs, as seen by the client.
    pub latencies_us: Vec<f64>,
    /// Transactions per second over the run.
    pub tps: f64,
}

/// One run with the server's view of it.
pub struct Run {
    pub measured: Measured,
    /// Statements the server executed per transaction (`pg_stat_statements`,
    /// `BEGIN` and `COMMIT` included): the round trips.
    pub statements_per_tx: f64,
    /// Statements the server planned per transaction: 0 for a prepared
    /// statement running its cached generic plan.
    pub plans_per_tx: f64,
    /// The server's execution time per transaction, in µs.
    pub exec_us_per_tx: f64,
    /// The server's planning time per transaction, in µs.
    pub plan_us_per_tx: f64,
}

/// Every run, by scenario and path, in round order.
pub type Results = BTreeMap<(usize, Path), Vec<Run>>;

/// The parts of a run, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// The main scenarios (and issue 13 (c), which reads them).
    Main,
    Pooler,
    /// Issue 13 (b).
    Delay,
    /// Issue 13 (a).
    History,
    /// Issue 13 (d).
    Hot,
    /// Issue 13 (e).
    Fleet,
}

impl Part {
    const ALL: [Part; 6] = [
        Part::Main,
        Part::Pooler,
        Part::Delay,
        Part::History,
        Part::Hot,
        Part::Fleet,
    ];

    fn parse(name: &str) -> Result<Part, String> {
        Part::ALL
            .into_iter()
            .find(|p| format!("{p:?}").eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                format!("unknown part `{name}` (main, pooler, delay, history, hot, fleet)")
            })
    }
}

struct Options {
    rounds: usize,
    hot_seconds: f64,
    /// Skip the durable scenarios (for quick iterations).
    no_durable: bool,
    /// `--quick`: fewer rounds, a smaller history pre-fill.
    quick: bool,
    /// History pre-fill sizes of (a).
    history_rows: Vec<u64>,
    /// What to run (`--only`; everything by default).
    parts: Vec<Part>,
}

impl Options {
    fn from_args() -> Result<Options, String> {
        let mut options = Options {
            rounds: 7,
            hot_seconds: 3.0,
            no_durable: false,
            quick: false,
            history_rows: vec![5_000_000, 20_000_000, 50_000_000],
            parts: Vec::new(),
        };
        let mut rounds_given = false;
        let mut history_given = false;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value =
                |name: &str| args.next().ok_or_else(|| format!("`{name}` needs a value"));
            match arg.as_str() {
                "--rounds" => {
                    options.rounds = value("--rounds")?
                        .parse()
                        .map_err(|e| format!("`--rounds`: {e}"))?;
                    if options.rounds < 3 {
                        return Err("`--rounds` must be at least 3".into());
                    }
                    rounds_given = true;
                }
                "--quick" => options.quick = true,
                "--history-rows" => {
                    options.history_rows = value("--history-rows")?
                        .split(',')
                        .map(|n| n.parse().map_err(|e| format!("`--history-rows`: {e}")))
                        .collect::<Result<_, _>>()?;
                    if options.history_rows.contains(&0) {
                        return Err("`--history-rows` takes sizes above 0: `A,B,...`".into());
                    }
                    history_given = true;
                }
                "--only" => {
                    for name in value("--only")?.split(',') {
                        options.parts.push(Part::parse(name)?);
                    }
                }
                "--hot-seconds" => {
                    options.hot_seconds = value("--hot-seconds")?
                        .parse()
                        .map_err(|e| format!("`--hot-seconds`: {e}"))?;
                }
                "--no-durable" => options.no_durable = true,
                "--pooler-only" => options.parts.push(Part::Pooler),
                // What `cargo bench` passes to every bench target.
                "--bench" => {}
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        if options.quick {
            if !rounds_given {
                options.rounds = 3;
            }
            options.hot_seconds = options.hot_seconds.min(2.0);
            if !history_given {
                options.history_rows = vec![1_000_000, 4_000_000];
            }
        }
        if options.parts.is_empty() {
            options.parts = Part::ALL.to_vec();
        }
        Ok(options)
    }
}

fn main() -> ExitCode {
    match Options::from_args().and_then(|options| run(&options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

fn run(options: &Options) -> Result<bool, String> {
    let began = Instant::now();
    let server = EmbeddedPostgres::builder()
        .durable(true)
        .setting("shared_preload_libraries", "pg_stat_statements")
        .setting("pg_stat_statements.track_planning", "on")
        .setting("max_connections", "50")
        .start()
        .map_err(|e| format!("cannot start PostgreSQL: {e}"))?;
    let work = tempfile::Builder::new()
        .prefix("machine-state-compare-")
        .tempdir()
        .map_err(|e| format!("cannot create a work directory: {e}"))?;
    pgbench::write_scripts(work.path()).map_err(|e| format!("cannot write the scripts: {e}"))?;

    let admin_url = server.url("postgres");
    let admin = &mut connect(&admin_url)?;
    admin
        .batch_execute("CREATE DATABASE bench")
        .map_err(|e| format!("cannot create the database `bench`: {e}"))?;
    let bench_url = server.url("bench");
    let bench = &mut connect(&bench_url)?;
    machine_state::run_migrations(bench).map_err(|e| format!("cannot migrate: {e}"))?;
    bench
        .batch_execute("CREATE EXTENSION pg_stat_statements")
        .map_err(|e| format!("cannot create pg_stat_statements: {e}"))?;
    common::seed(bench, MACHINES);
    bench
        .batch_execute("CHECKPOINT")
        .map_err(|e| format!("cannot checkpoint: {e}"))?;
    let async_url = format!("{bench_url}&options=-c%20synchronous_commit%3Doff");
    check_setting(&async_url, "synchronous_commit", "off")?;
    check_setting(&bench_url, "synchronous_commit", "on")?;
    check_setting(&bench_url, "fsync", "on")?;

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let version = single_text(bench, "SELECT current_setting('server_version') AS value")?;
    let machine = format!(
        "PostgreSQL {version}, {cores} cores, unix socket, {MACHINES} machines, \
         durable server (fsync on), {} interleaved rounds{}",
        options.rounds,
        if options.quick {
            format!(
                " (`--quick`: history pre-filled to {:?} rows instead of 5M, 20M and 50M)",
                options.history_rows
            )
        } else {
            String::new()
        }
    );
    println!("machine-state compare: {machine}");
    let runs_part = |part: Part| options.parts.contains(&part);
    let pgbench_bin = pgbench::find(server.bin_dir());
    let target = pgbench::Target {
        pgbench: &pgbench_bin,
        socket_dir: server.socket_dir(),
        database: "bench",
        work_dir: work.path(),
        options: "",
    };
    let mut last_history = max_history_id(bench)?;
    let mut sections = Vec::new();
    let mut goals = Vec::new();
    let mut passed = true;
    let mut svg = None;

    if runs_part(Part::Main) {
        let one = Path::ALL;
        let four = [
            Path::Function,
            Path::Cte,
            Path::Default,
            Path::QueryBuilder,
            Path::CrateFunction,
        ];
        let mut scenarios: Vec<(Plan, &[Path])> = vec![
            (Plan::new(true, 1, cores), &one),
            (Plan::new(false, 1, cores), &one),
            (Plan::new(true, 4, cores), &four),
            (Plan::new(false, 4, cores), &four),
        ];
        scenarios.retain(|(plan, _)| !(options.no_durable && plan.durable));
        let mut runs: Vec<(usize, Path)> = scenarios
            .iter()
            .enumerate()
            .flat_map(|(s, (_, paths))| paths.iter().map(move |p| (s, *p)))
            .collect();
        let mut results = Results::new();
        for round in 0..options.rounds {
            // A different order each round, so no path always follows another.
            let shift = round * runs.len() / options.rounds;
            runs.rotate_left(shift);
            if round % 2 == 1 {
                runs.reverse();
            }
            let round_began = Instant::now();
            for &(scenario, path) in &runs {
                let plan = &scenarios[scenario].0.in_round(round);
                let url = if plan.durable { &bench_url } else { &async_url };
                let run = measure(bench, &target, url, path, plan)?;
                last_history = verify(bench, path, plan, last_history)?;
                results.entry((scenario, path)).or_default().push(run);
            }
            println!(
                "round {}/{} done in {:.1} s",
                round + 1,
                options.rounds,
                round_began.elapsed().as_secs_f64()
            );
        }
        let plans: Vec<Plan> = scenarios.iter().map(|(plan, _)| *plan).collect();
        let report = report::Report {
            plans: &plans,
            results: &results,
        };
        sections.push(report.markdown());
        svg = Some(report.svg());
        goals.extend(function::goals(&plans, &results));
        sections.push(function::diagnose(
            bench,
            &target,
            &Plan::new(true, 1, cores),
            &mut last_history,
        )?);
    }
    if runs_part(Part::Pooler) {
        let through_pooler = pooler::run(
            &server,
            bench,
            Plan::new(true, 1, cores),
            options.rounds,
            last_history,
        )?;
        last_history = max_history_id(bench)?;
        sections.push(through_pooler.markdown());
    }
    if runs_part(Part::Delay) {
        let delayed = delay::run(
            &server,
            bench,
            &pgbench_bin,
            work.path(),
            Plan::new(false, 1, cores),
            options.rounds,
            &mut last_history,
        )?;
        sections.push(delayed.markdown());
        goals.extend(delayed.goals);
    }
    if runs_part(Part::History) {
        let long = history::run(
            &server,
            admin,
            &options.history_rows,
            MACHINES,
            Plan::new(true, 1, cores),
            options.rounds,
        )?;
        sections.push(long.markdown());
        goals.extend(long.goals);
    }
    if runs_part(Part::Hot) {
        for database in ["hotspot", "hotspot_pgbench"] {
            admin
                .batch_execute(&format!("CREATE DATABASE {database}"))
                .map_err(|e| format!("cannot create the database `{database}`: {e}"))?;
        }
        let hot = hotspot::run(
            &server,
            8,
            options.hot_seconds,
            options.rounds,
            &hotspot::Pgbench {
                bin: &pgbench_bin,
                work_dir: work.path(),
                cores,
            },
        )?;
        passed &= hot.passed();
        sections.push(hot.markdown());
        goals.extend(hot.goals());
    }
    if runs_part(Part::Fleet) {
        let fleet = fleet::run(&server, admin, options.rounds)?;
        sections.push(fleet.markdown());
        goals.extend(fleet.goals);
    }
    drop(server);

    let mut text = format!("# machine-state compare\n\nMachine: {machine}.\n\n");
    if !goals.is_empty() {
        text.push_str(&goal::table("Issue 13 targets", &goals));
        text.push('\n');
    }
    text.push_str(&sections.join("\n"));
    println!("\n{text}");
    let out = output_dir();
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    std::fs::write(out.join("results.md"), &text)
        .map_err(|e| format!("cannot write results.md: {e}"))?;
    if let Some(svg) = svg {
        std::fs::write(out.join("latency.svg"), svg)
            .map_err(|e| format!("cannot write latency.svg: {e}"))?;
    }
    println!(
        "wrote {} in {:.0} s",
        out.display(),
        began.elapsed().as_secs_f64()
    );
    Ok(passed)
}

/// Run one path once, with the server's statement counts around it.
fn measure(
    bench: &mut PgConnection,
    target: &pgbench::Target<'_>,
    url: &str,
    path: Path,
    plan: &Plan,
) -> Result<Run, String> {
    let measured = if path.is_pgbench() {
        reset_statements(bench)?;
        pgbench::run(target, path, plan)?
    } else {
        workload::run(url, path, plan, || reset_statements(bench))?
    };
    let totals = statement_totals(bench)?;
    let transactions = measured.latencies_us.len() as f64;
    Ok(Run {
        statements_per_tx: totals.calls / transactions,
        plans_per_tx: totals.plans / transactions,
        exec_us_per_tx: totals.exec_ms * 1000.0 / transactions,
        plan_us_per_tx: totals.plan_ms * 1000.0 / transactions,
        measured,
    })
}

fn reset_statements(conn: &mut PgConnection) -> Result<(), String> {
    conn.batch_execute("SELECT pg_stat_statements_reset()")
        .map_err(|e| format!("cannot reset pg_stat_statements: {e}"))
}

/// What `pg_stat_statements` counted in the bench database since the reset.
#[derive(QueryableByName)]
struct Totals {
    #[diesel(sql_type = Double)]
    calls: f64,
    #[diesel(sql_type = Double)]
    plans: f64,
    #[diesel(sql_type = Double)]
    exec_ms: f64,
    #[diesel(sql_type = Double)]
    plan_ms: f64,
}

fn statement_totals(conn: &mut PgConnection) -> Result<Totals, String> {
    sql_query(
        "SELECT coalesce(sum(s.calls), 0)::float8 AS calls,
                coalesce(sum(s.plans), 0)::float8 AS plans,
                coalesce(sum(s.total_exec_time), 0)::float8 AS exec_ms,
                coalesce(sum(s.total_plan_time), 0)::float8 AS plan_ms
         FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
         WHERE d.datname = current_database() AND s.query NOT LIKE '%pg_stat_statements%'",
    )
    .get_result(conn)
    .map_err(|e| format!("cannot read pg_stat_statements: {e}"))
}

#[derive(QueryableByName)]
struct Check {
    #[diesel(sql_type = BigInt)]
    idle: i64,
    #[diesel(sql_type = BigInt)]
    machines: i64,
    #[diesel(sql_type = BigInt)]
    new_entries: i64,
    #[diesel(sql_type = BigInt)]
    not_repeatable_read: i64,
    #[diesel(sql_type = BigInt)]
    last_id: i64,
}

/// After a run: every machine is idle again with both rows agreeing, and the
/// path appended exactly one REPEATABLE READ history row per transaction.
fn verify(conn: &mut PgConnection, path: Path, plan: &Plan, after: i64) -> Result<i64, String> {
    let check: Check = sql_query(format!(
        "SELECT
            (SELECT count(*) FROM machines m JOIN machine_state s ON s.machine_id = m.id
             WHERE m.status = 'idle' AND s.current_state = 'idle'
               AND m.current_process_id IS NULL AND s.process_id IS NULL) AS idle,
            (SELECT count(*) FROM machines) AS machines,
            (SELECT count(*) FROM machine_state_transitions WHERE id > {after}) AS new_entries,
            (SELECT count(*) FROM machine_state_transitions
             WHERE id > {after} AND isolation_level <> 'repeatable read') AS not_repeatable_read,
            (SELECT coalesce(max(id), 0) FROM machine_state_transitions) AS last_id"
    ))
    .get_result(conn)
    .map_err(|e| format!("cannot verify the run: {e}"))?;
    let expected_entries = if path.writes_history() {
        plan.transactions() as i64
    } else {
        0
    };
    let what = format!("{} ({})", path.label(), plan.label());
    if check.idle != i64::from(MACHINES) || check.machines != i64::from(MACHINES) {
        return Err(format!(
            "{what} left {} of {} machines idle and consistent",
            check.idle, check.machines
        ));
    }
    if check.new_entries != expected_entries {
        return Err(format!(
            "{what} wrote {} history rows, expected {expected_entries}",
            check.new_entries
        ));
    }
    if check.not_repeatable_read != 0 {
        return Err(format!(
            "{what} wrote {} history rows not under REPEATABLE READ",
            check.not_repeatable_read
        ));
    }
    Ok(check.last_id)
}

fn max_history_id(conn: &mut PgConnection) -> Result<i64, String> {
    #[derive(QueryableByName)]
    struct Last {
        #[diesel(sql_type = BigInt)]
        last_id: i64,
    }
    sql_query("SELECT coalesce(max(id), 0) AS last_id FROM machine_state_transitions")
        .get_result::<Last>(conn)
        .map(|last| last.last_id)
        .map_err(|e| format!("cannot read the history: {e}"))
}

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = Text)]
    value: String,
}

fn single_text(conn: &mut PgConnection, query: &str) -> Result<String, String> {
    sql_query(query)
        .get_result::<Value>(conn)
        .map(|v| v.value)
        .map_err(|e| format!("`{query}` failed: {e}"))
}

/// A session made from `url` sees `name = value`.
fn check_setting(url: &str, name: &str, value: &str) -> Result<(), String> {
    let found = single_text(
        &mut connect(url)?,
        &format!("SELECT current_setting('{name}') AS value"),
    )?;
    if found == value {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is `{found}` on {url}, expected `{value}`"
        ))
    }
}

pub fn connect(url: &str) -> Result<PgConnection, String> {
    PgConnection::establish(url).map_err(|e| format!("cannot connect to {url}: {e}"))
}

/// `target/bench-compare` (or under `CARGO_TARGET_DIR`).
fn output_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("bench-compare")
}
