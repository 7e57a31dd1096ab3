//! The hot spot: many workers racing on one machine through the default path.
//!
//! Each worker checks a connection out, loads the machine, and performs the
//! transition its state calls for (`start` when idle, `complete` when
//! processing) with an operation id of its own. Lost races (40001) are
//! retried inside the crate; a worker that finds the machine moved on gets a
//! typed `Conflict`. Afterwards the history must hold exactly the
//! transitions that reported success, as one unbroken chain under
//! REPEATABLE READ, ending in the state both rows agree on.

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

use crate::{common, connect};

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
    /// Latency of the applied transitions (retries included), µs.
    pub latencies_us: Vec<f64>,
}

impl HotSpot {
    pub fn passed(&self) -> bool {
        self.untyped.is_empty() && self.lost == 0 && self.phantom == 0 && self.chain_ok
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

pub fn run(server: &EmbeddedPostgres, workers: u32, seconds: f64) -> Result<HotSpot, String> {
    let url = server.url("hotspot");
    {
        let conn = &mut connect(&url)?;
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
    let pool = machine_state::pool_builder()
        .max_size(workers)
        .min_idle(Some(workers))
        .build(machine_state::Manager::new(url.as_str()).unwrap())
        .map_err(|e| format!("cannot build the pool: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let tallies: Vec<Option<Tally>> = thread::scope(|scope| {
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
    drop(pool);
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
        seconds,
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
    })
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
    let history =
        machine_state::history(conn, id).map_err(|e| format!("cannot read the history: {e}"))?;
    let recorded: HashSet<Uuid> = history
        .iter()
        .filter(|entry| entry.kind == "transition")
        .map(|entry| entry.operation_id)
        .collect();
    let chained = history
        .windows(2)
        .all(|pair| pair[1].from_state.as_deref() == Some(pair[0].to_state.as_str()));
    let repeatable = history
        .iter()
        .filter(|entry| entry.kind == "transition")
        .all(|entry| entry.isolation_level == "repeatable read");
    let ends_right = match (AnyMachine::load(conn, id), history.last()) {
        (Ok(machine), Some(last)) => machine.state().as_str() == last.to_state,
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
        let operation_id = Uuid::new_v4();
        let started = Instant::now();
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
