//! The hot spot: many workers racing on one machine through the default path.
//!
//! Each worker checks a connection out, loads the machine, and performs the
//! transition its state calls for (`start` when idle, `complete` when
//! processing) with an operation id of its own. Lost races (40001) are
//! retried inside the crate; a worker that finds the machine moved on gets a
//! typed `Conflict`. Afterwards the history must hold exactly the
//! transitions that reported success, as one unbroken chain under
//! REPEATABLE READ, ending in the state both rows agree on.
//!
//! Side by side (issue 13 (d)), pgbench runs the same REPEATABLE READ
//! transition as one statement on a machine of its own database
//! (`pgbench::run_hot`), retrying serialization failures itself
//! (`--max-tries`, the crate's attempt budget); its history is checked the
//! same way. The two alternate over the rounds; goodput is committed
//! transitions per second.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::BigInt;
use machine_state::{Action, AnyMachine, EmbeddedPostgres, Error, State};
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;

use crate::goal::{self, Goal};
use crate::{common, connect, pgbench};

/// What the hot spot saw.
pub struct HotSpot {
    pub workers: u32,
    pub seconds: f64,
    /// Transitions that reported success.
    pub applied: u64,
    /// Retries inside the crate (its debug events with an `attempt`).
    pub retries: u64,
    /// Transactions the server rolled back (40001, 40P01, anything else).
    pub server_rollbacks: i64,
    /// Typed refusals: `Conflict`, the machine had moved on.
    pub conflicts: u64,
    /// Typed: `RetriesExhausted`, the retry budget ran out.
    pub exhausted: u64,
    /// Any other error, with its message.
    pub untyped: Vec<String>,
    /// Successful transitions missing from the history.
    pub lost: usize,
    /// History entries no worker saw succeed.
    pub phantom: usize,
    /// Whether the history is one chain under REPEATABLE READ ending in the
    /// machine's state.
    pub chain_ok: bool,
    /// Latency of the applied transitions (load and retries included), µs.
    pub latencies_us: Vec<f64>,
    /// The crate's goodput in each round.
    pub goodput: Vec<f64>,
    /// pgbench's side.
    pub pgbench: PgbenchHot,
}

/// pgbench on the hot spot, over all rounds.
#[derive(Default)]
pub struct PgbenchHot {
    pub processed: u64,
    pub failed: u64,
    pub retries: u64,
    pub seconds: f64,
    pub latencies_us: Vec<f64>,
    pub goodput: Vec<f64>,
    /// Committed transactions missing from the history, or history rows
    /// beyond them.
    pub lost: u64,
    pub chain_ok: bool,
}

impl HotSpot {
    pub fn passed(&self) -> bool {
        self.untyped.is_empty()
            && self.lost == 0
            && self.phantom == 0
            && self.chain_ok
            && self.pgbench.lost == 0
            && self.pgbench.chain_ok
    }

    pub fn goals(&self) -> Vec<Goal> {
        let ratios: Vec<f64> = self
            .goodput
            .iter()
            .zip(&self.pgbench.goodput)
            .map(|(c, p)| c / p)
            .collect();
        vec![
            Goal::at_least(
                "(d) hot spot: crate goodput ÷ pgbench `--max-tries` goodput",
                goal::median(&ratios),
                1.0,
                "×",
            )
            .note(format!(
                "{}; p99 {:.1} ms vs {:.1} ms",
                goal::range(&ratios),
                goal::quantile(&self.latencies_us, 0.99) / 1000.0,
                goal::quantile(&self.pgbench.latencies_us, 0.99) / 1000.0
            )),
            Goal::at_most(
                "(d) hot spot: untyped errors",
                self.untyped.len() as f64,
                0.0,
                "",
            ),
            Goal::at_most(
                "(d) hot spot: transitions lost (or phantom), crate and pgbench",
                (self.lost + self.phantom) as f64 + self.pgbench.lost as f64,
                0.0,
                "",
            ),
            Goal::holds(
                "(d) hot spot: history chains unbroken",
                self.chain_ok && self.pgbench.chain_ok,
            ),
        ]
    }

    pub fn markdown(&self) -> String {
        let q = |v: &[f64], q: f64| goal::quantile(v, q) / 1000.0;
        let p = &self.pgbench;
        let mut text = format!(
            "## (d) Hot spot: {} workers on 1 machine, durable, {} s in all\n\n\
             The crate: load the machine, perform the transition its state calls for \
             (latency from the load). pgbench: one REPEATABLE READ statement doing the \
             same, `--max-tries={}`.\n\n\
             | who | committed | goodput /s (median of rounds) | p50 ms | p99 ms | retries | rollbacks (server) | refused: `Conflict` | gave up | untyped errors | lost | history chain |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n",
            self.workers,
            self.seconds,
            machine_state::RetryPolicy::default().max_attempts,
        );
        let chain = |ok: bool| if ok { "unbroken" } else { "**broken**" };
        text.push_str(&format!(
            "| `crate/default` | {} | {:.0} | {:.3} | {:.3} | {} | {} | {} | {} | {} | {} | {} |\n",
            self.applied,
            goal::median(&self.goodput),
            q(&self.latencies_us, 0.5),
            q(&self.latencies_us, 0.99),
            self.retries,
            self.server_rollbacks,
            self.conflicts,
            self.exhausted,
            self.untyped.len(),
            self.lost + self.phantom,
            chain(self.chain_ok),
        ));
        text.push_str(&format!(
            "| `pgbench --max-tries` | {} | {:.0} | {:.3} | {:.3} | {} | — | — | {} | — | {} | {} |\n",
            p.processed,
            goal::median(&p.goodput),
            q(&p.latencies_us, 0.5),
            q(&p.latencies_us, 0.99),
            p.retries,
            p.failed,
            p.lost,
            chain(p.chain_ok),
        ));
        for error in self.untyped.iter().take(5) {
            text.push_str(&format!("- untyped: {error}\n"));
        }
        text
    }
}

/// Counts the crate's "lost a race, retrying" events: debug events of the
/// crate carrying an `attempt` field.
struct RetryCounter(Arc<AtomicU64>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RetryCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if meta.target().starts_with("machine_state") && meta.fields().field("attempt").is_some() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Tally {
    applied: Vec<Uuid>,
    conflicts: u64,
    exhausted: u64,
    untyped: Vec<String>,
    latencies_us: Vec<f64>,
}

/// Where pgbench runs.
pub struct Pgbench<'a> {
    pub bin: &'a std::path::Path,
    pub work_dir: &'a std::path::Path,
    pub cores: u32,
}

pub fn run(
    server: &EmbeddedPostgres,
    workers: u32,
    seconds: f64,
    rounds: usize,
    pgbench_at: &Pgbench<'_>,
) -> Result<HotSpot, String> {
    // pgbench's `-T` counts whole seconds: both sides run as long.
    let seconds = seconds.ceil().max(1.0);
    let url = server.url("hotspot");
    let pgbench_url = server.url("hotspot_pgbench");
    for url in [&url, &pgbench_url] {
        let conn = &mut connect(url)?;
        machine_state::run_migrations(conn).map_err(|e| format!("cannot migrate: {e}"))?;
        common::seed(conn, 1);
    }
    let id = common::machine_id(1);
    let admin = &mut connect(&server.url("postgres"))?;
    wait_for_no_sessions(admin)?;
    let rollbacks_before = rollbacks(admin)?;

    let retries = Arc::new(AtomicU64::new(0));
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry().with(RetryCounter(Arc::clone(&retries))),
    );
    let pool = machine_state::pool::pool_builder()
        .max_size(workers)
        .min_idle(Some(workers))
        .build(
            machine_state::pool::Manager::new(url.as_str())
                .map_err(|e| format!("cannot make the pool's manager: {e}"))?,
        )
        .map_err(|e| format!("cannot build the pool: {e}"))?;
    let target = pgbench::Target {
        pgbench: pgbench_at.bin,
        socket_dir: server.socket_dir(),
        database: "hotspot_pgbench",
        work_dir: pgbench_at.work_dir,
        options: "",
    };
    let max_tries = machine_state::RetryPolicy::default().max_attempts;
    let mut tallies: Vec<Option<Tally>> = Vec::new();
    let mut goodput = Vec::new();
    let mut on_pgbench = PgbenchHot {
        chain_ok: true,
        ..PgbenchHot::default()
    };
    let pgbench_conn = &mut connect(&pgbench_url)?;
    for round in 0..rounds {
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let deadline = Instant::now() + Duration::from_secs_f64(seconds);
                let round_tallies: Vec<Option<Tally>> = thread::scope(|scope| {
                    let handles: Vec<_> = (0..workers)
                        .map(|_| {
                            let (pool, dispatch) = (&pool, &dispatch);
                            scope.spawn(move || {
                                let _guard = tracing::dispatcher::set_default(dispatch);
                                worker(pool, id, deadline)
                            })
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().ok()).collect()
                });
                let applied: usize = round_tallies
                    .iter()
                    .flatten()
                    .map(|t| t.applied.len())
                    .sum();
                goodput.push(applied as f64 / seconds);
                tallies.extend(round_tallies);
            } else {
                let before = max_id(pgbench_conn)?;
                let run = pgbench::run_hot(&target, workers, pgbench_at.cores, seconds, max_tries)?;
                let recorded = (max_id(pgbench_conn)? - before).max(0) as u64;
                on_pgbench.lost += run.processed.abs_diff(recorded);
                on_pgbench.processed += run.processed;
                on_pgbench.failed += run.failed;
                on_pgbench.retries += run.retries;
                on_pgbench.seconds += run.seconds;
                on_pgbench.goodput.push(run.processed as f64 / run.seconds);
                on_pgbench.latencies_us.extend(run.latencies_us);
            }
        }
        println!("hot spot: round {}/{rounds} done", round + 1);
    }
    drop(pool);
    on_pgbench.chain_ok = sql_chain_ok(pgbench_conn, id)?;
    let panicked = tallies.iter().filter(|t| t.is_none()).count();
    let tallies: Vec<Tally> = tallies.into_iter().flatten().collect();

    let applied: HashSet<Uuid> = tallies.iter().flat_map(|t| t.applied.clone()).collect();
    let (lost, phantom, chain_ok) = check_history(&url, id, &applied)?;
    wait_for_no_sessions(admin)?;
    let server_rollbacks = rollbacks(admin)? - rollbacks_before;
    let mut latencies_us = Vec::new();
    let (mut conflicts, mut exhausted, mut untyped) = (0, 0, Vec::new());
    for tally in &tallies {
        conflicts += tally.conflicts;
        exhausted += tally.exhausted;
        untyped.extend(tally.untyped.iter().cloned());
        latencies_us.extend(&tally.latencies_us);
    }
    if panicked > 0 {
        untyped.push(format!("{panicked} worker(s) panicked"));
    }
    Ok(HotSpot {
        workers,
        seconds: seconds * rounds as f64,
        applied: applied.len() as u64,
        retries: retries.load(Ordering::Relaxed),
        server_rollbacks,
        conflicts,
        exhausted,
        untyped,
        lost,
        phantom,
        chain_ok,
        latencies_us,
        goodput,
        pgbench: on_pgbench,
    })
}

fn max_id(conn: &mut PgConnection) -> Result<i64, String> {
    sql_query("SELECT coalesce(max(id), 0) AS n FROM machine_state_transitions")
        .get_result::<Count>(conn)
        .map(|c| c.n)
        .map_err(|e| format!("cannot read the history: {e}"))
}

/// pgbench's history: one chain (each `from` the previous `to`), every
/// transition under REPEATABLE READ, ending in the state both rows hold.
fn sql_chain_ok(conn: &mut PgConnection, id: Uuid) -> Result<bool, String> {
    let breaks = sql_query(format!(
        "SELECT (SELECT count(*) FROM (
                     SELECT from_state, kind, isolation_level,
                            lag(to_state) OVER (ORDER BY id) AS previous
                     FROM machine_state_transitions WHERE machine_id = '{id}') t
                 WHERE previous IS NOT NULL
                   AND (from_state IS DISTINCT FROM previous
                        OR isolation_level <> 'repeatable read'))
              + (SELECT count(*) FROM machines m JOIN machine_state s ON s.machine_id = m.id
                 WHERE m.id = '{id}' AND (m.status <> s.current_state
                     OR m.current_process_id IS DISTINCT FROM s.process_id
                     OR m.status <> (SELECT to_state FROM machine_state_transitions
                                     WHERE machine_id = '{id}' ORDER BY id DESC LIMIT 1)))
              AS n"
    ))
    .get_result::<Count>(conn)
    .map_err(|e| format!("cannot check pgbench's history: {e}"))?
    .n;
    Ok(breaks == 0)
}

/// Compare the history with what the workers saw: (successes missing from
/// it, entries nobody saw succeed, whether it is one REPEATABLE READ chain
/// ending in the machine's state).
fn check_history(
    url: &str,
    id: Uuid,
    applied: &HashSet<Uuid>,
) -> Result<(usize, usize, bool), String> {
    let conn = &mut connect(url)?;
    let history = machine_state::history::history(conn, id)
        .map_err(|e| format!("cannot read the history: {e}"))?;
    let recorded: HashSet<Uuid> = history
        .iter()
        .filter(|entry| entry.kind == "transition")
        .map(|entry| entry.operation_id)
        .collect();
    let chained = history
        .windows(2)
        .all(|pair| pair[1].from_state.as_ref() == Some(&pair[0].to_state));
    let repeatable = history
        .iter()
        .filter(|entry| entry.kind == "transition")
        .all(|entry| entry.isolation_level == "repeatable read");
    let ends_right = match (AnyMachine::load(conn, id), history.last()) {
        (Ok(machine), Some(last)) => last.to_state == machine.state(),
        _ => false,
    };
    Ok((
        applied.difference(&recorded).count(),
        recorded.difference(applied).count(),
        chained && repeatable && ends_right,
    ))
}

fn worker(pool: &machine_state::Pool, id: Uuid, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        let conn = &mut match pool.get() {
            Ok(conn) => conn,
            Err(e) => {
                tally.untyped.push(format!("pool: {e}"));
                continue;
            }
        };
        let started = Instant::now();
        let machine = match AnyMachine::load(conn, id) {
            Ok(machine) => machine,
            Err(e) => {
                tally.untyped.push(format!("load: {e}"));
                continue;
            }
        };
        let action = match machine.state() {
            State::Idle => Action::Start(Uuid::new_v4()),
            State::Processing => Action::Complete,
            other => {
                tally.untyped.push(format!("unexpected state `{other}`"));
                continue;
            }
        };
        let operation_id = machine_state::new_operation_id();
        match machine
            .with_operation_id(operation_id)
            .perform(conn, &action)
        {
            Ok(_) => {
                tally
                    .latencies_us
                    .push(started.elapsed().as_secs_f64() * 1e6);
                tally.applied.push(operation_id);
            }
            Err(refused) => match refused.error {
                Error::Conflict { .. } => tally.conflicts += 1,
                Error::RetriesExhausted { .. } => tally.exhausted += 1,
                other => tally.untyped.push(format!("{other}: {other:?}")),
            },
        }
    }
    tally
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Transactions rolled back in the hot spot's database, as the server
/// counts them (flushed when its sessions end).
fn rollbacks(admin: &mut PgConnection) -> Result<i64, String> {
    admin
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .map_err(|e| format!("cannot clear the stats snapshot: {e}"))?;
    sql_query("SELECT xact_rollback AS n FROM pg_stat_database WHERE datname = 'hotspot'")
        .get_result::<Count>(admin)
        .map(|c| c.n)
        .map_err(|e| format!("cannot read pg_stat_database: {e}"))
}

/// Wait until every session of the hot spot's database has ended, so their
/// statistics have reached the server's counters.
fn wait_for_no_sessions(admin: &mut PgConnection) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sessions =
            sql_query("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = 'hotspot'")
                .get_result::<Count>(admin)
                .map_err(|e| format!("cannot read pg_stat_activity: {e}"))?
                .n;
        if sessions == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{sessions} sessions of `hotspot` did not end"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}
