//! `cargo bench --bench transitions`: criterion benches of every transition.
//!
//! - `transition/<from>_to_<to>/default`: the public API on the default
//!   path, a [`machine_state::pool`] checkout included;
//! - `transition/{idle_to_processing,processing_to_idle}/sql_function`: the
//!   same through the SQL function write path;
//! - `.../query_builder`: a hand-written diesel DSL REPEATABLE READ
//!   transaction (two guarded `update`s and the history insert);
//! - `.../legacy_two_write`: the legacy baseline, two blind autocommit
//!   updates.
//!
//! Every iteration checks its outcome (a broken path cannot be timed), and
//! only the transition is timed: the machine is put back into the source
//! state, untimed, after each one. The server is a private, non-durable
//! PostgreSQL (commit latency is the disk's, and is measured by
//! `cargo bench --bench compare`, which also sets these paths side by side
//! with pgbench).

#![allow(
    unreachable_pub,
    reason = "a bench binary's modules share items with `pub`; none is reachable from outside"
)]

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};
use diesel::prelude::*;
use machine_state::{Action, AnyMachine, EmbeddedPostgres, Idle, Machine, Pool, State, WritePath};
use uuid::Uuid;

use common::Step;

/// Machines each bench cycles through, so no single row gets hot.
const RING: usize = 32;

fn main() {
    let server = EmbeddedPostgres::builder()
        .start()
        .unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
    let url = server.url("postgres");
    {
        let conn = &mut PgConnection::establish(&url)
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        machine_state::run_migrations(conn).unwrap_or_else(|e| panic!("cannot migrate: {e}"));
    }
    let pool = machine_state::pool::pool_builder()
        .max_size(1)
        .min_idle(Some(1))
        .build(machine_state::pool::Manager::new(url.as_str()).unwrap())
        .unwrap_or_else(|e| panic!("cannot build the pool: {e}"));

    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    define_default(&mut criterion, &pool);
    define_baselines(&mut criterion, &pool);
    criterion.final_summary();
    drop(pool);
    server
        .stop()
        .unwrap_or_else(|e| panic!("cannot stop PostgreSQL: {e}"));
}

/// An action with a fresh process id where it needs one.
fn act(action: &Action) -> Action {
    match action {
        Action::Start(_) => Action::Start(Uuid::new_v4()),
        other => other.clone(),
    }
}

/// Every legal transition through the public API, pool checkout included.
fn define_default(c: &mut Criterion, pool: &Pool) {
    let fail = || Action::Fail("chamber pressure out of range".into());
    let start = || Action::Start(Uuid::nil());
    // (name, source state, the transition, how to get back to the source).
    let cases: Vec<(&str, State, Action, Vec<Action>)> = vec![
        (
            "offline_to_idle",
            State::Offline,
            Action::BringOnline,
            vec![Action::TakeOffline],
        ),
        (
            "offline_to_processing",
            State::Offline,
            start(),
            vec![Action::Complete, Action::TakeOffline],
        ),
        (
            "idle_to_processing",
            State::Idle,
            start(),
            vec![Action::Complete],
        ),
        (
            "idle_to_offline",
            State::Idle,
            Action::TakeOffline,
            vec![Action::BringOnline],
        ),
        (
            "processing_to_idle",
            State::Processing,
            Action::Complete,
            vec![start()],
        ),
        (
            "processing_to_idle_stop",
            State::Processing,
            Action::Stop,
            vec![start()],
        ),
        (
            "processing_to_error",
            State::Processing,
            fail(),
            vec![Action::Reset, start()],
        ),
        (
            "error_to_idle",
            State::Errored,
            Action::Reset,
            vec![start(), fail()],
        ),
        (
            "error_to_offline",
            State::Errored,
            Action::TakeOffline,
            vec![Action::BringOnline, start(), fail()],
        ),
    ];
    for (name, source, action, back) in cases {
        let mut group = c.benchmark_group(format!("transition/{name}"));
        bench_api(&mut group, "default", pool, source, &action, &back, None);
        if matches!(name, "idle_to_processing" | "processing_to_idle") {
            let path = Some(WritePath::SqlFunction);
            bench_api(
                &mut group,
                "sql_function",
                pool,
                source,
                &action,
                &back,
                path,
            );
        }
        group.finish();
    }
}

/// Time `action` from `source` on a ring of machines, `back` restoring each
/// (untimed).
fn bench_api(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    pool: &Pool,
    source: State,
    action: &Action,
    back: &[Action],
    write_path: Option<WritePath>,
) {
    let mut ring: Vec<Option<AnyMachine>> =
        (0..RING).map(|_| Some(machine_in(pool, source))).collect();
    let mut next = 0;
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let slot = &mut ring[next % RING];
                next += 1;
                let mut machine = slot.take().unwrap_or_else(|| unreachable!("refilled"));
                if let Some(path) = write_path {
                    machine = machine.with_write_path(path);
                }
                let action = act(action);
                let started = Instant::now();
                let moved = {
                    let conn = &mut checkout(pool);
                    machine.perform(conn, &action)
                };
                timed += started.elapsed();
                let moved = moved.unwrap_or_else(|e| panic!("{action:?} refused: {}", e.error));
                assert_eq!(moved.state(), action.target(), "{action:?} did not apply");
                *slot = Some(walk(&mut checkout(pool), moved, back));
            }
            timed
        });
    });
}

/// The reference paths, on `idle -> processing` and back.
fn define_baselines(c: &mut Criterion, pool: &Pool) {
    type Path = fn(&mut PgConnection, &Step) -> Result<(), String>;
    let paths: [(&str, Path); 2] = [
        ("query_builder", |conn, step| {
            common::query_builder_transition(conn, step).map_err(|e| format!("{e:?}"))
        }),
        ("legacy_two_write", |conn, step| {
            common::legacy_two_write(conn, step).map_err(|e| e.to_string())
        }),
    ];
    // The bench machines of `common` (numbered ids, one run each), made idle.
    let numbers: Vec<u32> = (1..=RING as u32).collect();
    {
        let conn = &mut checkout(pool);
        for &n in &numbers {
            Machine::<Idle>::create(conn, common::machine_id(n))
                .unwrap_or_else(|e| panic!("cannot create machine {n}: {e}"));
        }
    }
    for (forward, name) in [(true, "idle_to_processing"), (false, "processing_to_idle")] {
        let mut group = c.benchmark_group(format!("transition/{name}"));
        for (id, path) in paths {
            let mut next = 0;
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let n = numbers[next % RING];
                        next += 1;
                        let (there, back) = (Step::start(n), Step::complete(n));
                        let (timed_step, untimed) = if forward {
                            (there, back)
                        } else {
                            run_step(pool, path, &there);
                            (back, there)
                        };
                        let started = Instant::now();
                        let result = {
                            let conn = &mut checkout(pool);
                            path(conn, &timed_step)
                        };
                        timed += started.elapsed();
                        result.unwrap_or_else(|e| panic!("{id}: {e}"));
                        assert_state(pool, n, timed_step.to);
                        if forward {
                            run_step(pool, path, &untimed);
                        }
                    }
                    timed
                });
            });
        }
        group.finish();
    }
}

fn run_step(pool: &Pool, path: fn(&mut PgConnection, &Step) -> Result<(), String>, step: &Step) {
    let conn = &mut checkout(pool);
    path(conn, step).unwrap_or_else(|e| panic!("restoring {step:?}: {e}"));
}

/// Both rows of machine `n` say `state` (untimed).
fn assert_state(pool: &Pool, n: u32, state: &str) {
    use ::machine_state::schema::{machine_state, machines};
    let conn = &mut checkout(pool);
    let (status, current): (String, String) = machines::table
        .inner_join(machine_state::table)
        .filter(machines::id.eq(common::machine_id(n)))
        .select((machines::status, machine_state::current_state))
        .first(conn)
        .unwrap_or_else(|e| panic!("cannot read machine {n}: {e}"));
    assert_eq!((status.as_str(), current.as_str()), (state, state));
}

/// A new machine in `state`.
fn machine_in(pool: &Pool, state: State) -> AnyMachine {
    let conn = &mut checkout(pool);
    let machine = Machine::<Idle>::create(conn, Uuid::new_v4())
        .unwrap_or_else(|e| panic!("cannot create a machine: {e}"));
    let path: &[Action] = match state {
        State::Idle => &[],
        State::Offline => &[Action::TakeOffline],
        State::Processing => &[Action::Start(Uuid::nil())],
        State::Errored => &[
            Action::Start(Uuid::nil()),
            Action::Fail("chamber pressure out of range".into()),
        ],
    };
    walk(conn, AnyMachine::Idle(machine), path)
}

/// Perform `actions` in order (untimed).
fn walk(conn: &mut PgConnection, mut machine: AnyMachine, actions: &[Action]) -> AnyMachine {
    for action in actions {
        let action = act(action);
        machine = machine
            .perform(conn, &action)
            .unwrap_or_else(|e| panic!("cannot {action:?}: {}", e.error));
    }
    machine
}

fn checkout(pool: &Pool) -> machine_state::PooledConnection {
    pool.get()
        .unwrap_or_else(|e| panic!("cannot check a connection out: {e}"))
}
