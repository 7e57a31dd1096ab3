//! The crate's paths, run by threads of this process: one thread per
//! connection, each checking a connection out of a [`machine_state::pool`]
//! for every transition, as an executor would.

use std::sync::Barrier;
use std::thread;
use std::time::Instant;

use machine_state::{AnyMachine, Idle, Machine, Processing, WritePath};

use crate::common::{self, Step};
use crate::{Measured, Path, Plan};

/// What a client knows about one of its machines: the typed machine its
/// last transition returned.
enum Slot {
    Idle(Machine<Idle>),
    Processing(Machine<Processing>),
    Moving,
}

/// Run a crate path (`Default`, `CrateFunction` or `QueryBuilder`) under `plan` on a pool of
/// `plan.clients` connections to `url`; `on_ready` runs once every client has
/// loaded its machines, just before the clock starts.
pub fn run(
    url: &str,
    path: Path,
    plan: &Plan,
    on_ready: impl FnOnce() -> Result<(), String>,
) -> Result<Measured, String> {
    let pool = machine_state::pool::pool_builder()
        .max_size(plan.clients)
        .min_idle(Some(plan.clients))
        .build(machine_state::pool::Manager::new(url).map_err(|e| e.to_string())?)
        .map_err(|e| format!("cannot build the pool: {e}"))?;
    let (ready, go) = (
        Barrier::new(plan.clients as usize + 1),
        Barrier::new(plan.clients as usize + 1),
    );
    thread::scope(|scope| {
        let clients: Vec<_> = (0..plan.clients)
            .map(|client| {
                let (pool, ready, go) = (&pool, &ready, &go);
                scope.spawn(move || {
                    let prepared = prepare(pool, plan, client, path);
                    ready.wait();
                    go.wait();
                    let slots = prepared?;
                    match path {
                        Path::Default | Path::CrateFunction => {
                            run_default(pool, plan, client, slots)
                        }
                        Path::QueryBuilder => run_query_builder(pool, plan, client),
                        _ => unreachable!("{path:?} is not a crate path"),
                    }
                })
            })
            .collect();
        ready.wait();
        let before = on_ready();
        go.wait();
        let started = Instant::now();
        let mut latencies_us = Vec::with_capacity(plan.transactions());
        for client in clients {
            let client = client
                .join()
                .map_err(|_| "a client thread panicked".to_owned())??;
            latencies_us.extend(client);
        }
        let elapsed = started.elapsed().as_secs_f64();
        before?;
        Ok(Measured {
            tps: latencies_us.len() as f64 / elapsed,
            latencies_us,
        })
    })
}

/// Load the client's machines (untimed): the default path transitions the
/// typed machines it holds, as a caller does.
fn prepare(
    pool: &machine_state::Pool,
    plan: &Plan,
    client: u32,
    path: Path,
) -> Result<Vec<Slot>, String> {
    if !matches!(path, Path::Default | Path::CrateFunction) {
        return Ok(Vec::new());
    }
    let write_path = if path == Path::CrateFunction {
        WritePath::SqlFunction
    } else {
        WritePath::Statement
    };
    let conn = &mut pool.get().map_err(|e| e.to_string())?;
    (0..plan.window)
        .map(|j| {
            let n = plan.machine(client, j);
            match AnyMachine::load(conn, common::machine_id(n)) {
                Ok(AnyMachine::Idle(machine)) if plan.starts(0) => {
                    Ok(Slot::Idle(machine.with_write_path(write_path)))
                }
                // a run of one sweep that completes (`Plan::sweep`)
                Ok(AnyMachine::Processing(machine)) if !plan.starts(0) => {
                    Ok(Slot::Processing(machine.with_write_path(write_path)))
                }
                Ok(other) => Err(format!("machine {n} is {} before the run", other.state())),
                Err(e) => Err(format!("cannot load machine {n}: {e}")),
            }
        })
        .collect()
}

fn run_default(
    pool: &machine_state::Pool,
    plan: &Plan,
    client: u32,
    mut slots: Vec<Slot>,
) -> Result<Vec<f64>, String> {
    let mut latencies = Vec::with_capacity(plan.transactions_per_client as usize);
    for k in 0..plan.transactions_per_client {
        let j = k % plan.window;
        let n = plan.machine(client, j);
        let slot = std::mem::replace(&mut slots[j as usize], Slot::Moving);
        let started = Instant::now();
        let next = {
            let conn = &mut pool.get().map_err(|e| e.to_string())?;
            match slot {
                Slot::Idle(machine) => machine
                    .start(conn, common::process_id(n))
                    .map(Slot::Processing)
                    .map_err(|e| e.error),
                Slot::Processing(machine) => {
                    machine.complete(conn).map(Slot::Idle).map_err(|e| e.error)
                }
                Slot::Moving => unreachable!("every slot is refilled"),
            }
        };
        latencies.push(started.elapsed().as_secs_f64() * 1e6);
        let next = next.map_err(|e| format!("machine {n}: {e}"))?;
        // A broken path must not be timed: the machine is where it should be.
        let id = common::machine_id(n);
        match (&next, plan.starts(k)) {
            (Slot::Processing(m), true)
                if m.id() == id && m.process_id() == common::process_id(n) => {}
            (Slot::Idle(m), false) if m.id() == id => {}
            _ => return Err(format!("machine {n} is in the wrong state after step {k}")),
        }
        slots[j as usize] = next;
    }
    Ok(latencies)
}

fn run_query_builder(
    pool: &machine_state::Pool,
    plan: &Plan,
    client: u32,
) -> Result<Vec<f64>, String> {
    let mut latencies = Vec::with_capacity(plan.transactions_per_client as usize);
    for k in 0..plan.transactions_per_client {
        let j = k % plan.window;
        let n = plan.machine(client, j);
        let step = if plan.starts(k) {
            Step::start(n)
        } else {
            Step::complete(n)
        };
        let started = Instant::now();
        let outcome = {
            let conn = &mut pool.get().map_err(|e| e.to_string())?;
            common::query_builder_transition(conn, &step)
        };
        latencies.push(started.elapsed().as_secs_f64() * 1e6);
        outcome.map_err(|e| format!("query builder, machine {n}: {e:?}"))?;
    }
    Ok(latencies)
}
