//! The recipe executor: run the steps of a recipe, then complete it — or fail
//! it with a message — together with its `process_executions` row.
//!
//! `cargo run --example executor` (embedded database, or `DATABASE_URL`).

#[path = "common/mod.rs"]
mod common;

use std::thread;
use std::time::Duration;

use machine_state::{Error, Machine, Offline, RecipeRun, RetryPolicy, transaction};
use uuid::Uuid;

fn main() -> Result<(), Error> {
    let db = common::open()?;
    let conn = &mut db.pool.get()?;
    let retry = RetryPolicy::default();
    let machine = Machine::<Offline>::create(conn, Uuid::new_v4())?.bring_online(conn)?;
    let machine_id = machine.id();

    // A run that succeeds: start -> steps -> complete.
    let run = RecipeRun::on(machine_id).run(Uuid::new_v4());
    transaction(conn, &retry, |conn| {
        run.start(conn, Uuid::new_v4())?;
        common::record_start(conn, machine_id, run.process_id)
    })?;
    for step in ["pump down", "deposit 200 cycles", "vent"] {
        println!("run {}: {step}", run.process_id);
        thread::sleep(Duration::from_millis(100));
    }
    let complete = Uuid::new_v4();
    let idle = transaction(conn, &retry, |conn| {
        common::record_end(conn, run.process_id, "completed", None)?;
        run.complete(conn, complete)
    })?;
    println!("completed: machine {} is {}", idle.id(), idle.state());

    // A run that fails: start -> step -> fail with a message.
    let run = RecipeRun::on(machine_id).run(Uuid::new_v4());
    transaction(conn, &retry, |conn| {
        run.start(conn, Uuid::new_v4())?;
        common::record_start(conn, machine_id, run.process_id)
    })?;
    println!("run {}: pump down", run.process_id);
    let message = "chamber pressure out of range";
    let errored = transaction(conn, &retry, |conn| {
        common::record_end(conn, run.process_id, "failed", Some(message))?;
        run.fail(conn, message, Uuid::new_v4())
    })?;
    println!(
        "failed: machine {} is {} ({})",
        errored.id(),
        errored.state(),
        errored.description()
    );

    errored.reset(conn)?;
    common::print_history(conn, machine_id)
}
