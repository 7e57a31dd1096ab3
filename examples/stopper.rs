//! The stopper: a user aborts a running recipe. The executor of that run,
//! still finishing its step, then tries to complete it: refused, because the
//! process id fences it, and its write to `process_executions` is rolled back
//! with the refusal.
//!
//! `cargo run --example stopper` (embedded database, or `DATABASE_URL`).

#[path = "common/mod.rs"]
mod common;

use machine_state::{Error, Machine, Offline, RecipeRun, RetryPolicy, transaction};
use uuid::Uuid;

fn main() -> Result<(), Error> {
    let db = common::open()?;
    let conn = &mut db.pool.get()?;
    let retry = RetryPolicy::default();
    let machine = Machine::<Offline>::create(conn, Uuid::new_v4())?.bring_online(conn)?;

    let run = RecipeRun::on(machine.id()).run(Uuid::new_v4());
    transaction(conn, &retry, |conn| {
        run.start(conn, Uuid::new_v4())?;
        common::record_start(conn, run.machine_id, run.process_id)
    })?;
    println!("run {} is processing", run.process_id);

    let idle = transaction(conn, &retry, |conn| {
        common::record_end(conn, run.process_id, "aborted", None)?;
        run.stop(conn, Uuid::new_v4())
    })?;
    println!("stopped by the user: machine is {}", idle.state());

    // The next run starts; then the first run's executor reports completion.
    let next = RecipeRun::on(machine.id()).run(Uuid::new_v4());
    next.start(conn, Uuid::new_v4())?;
    let late = transaction(conn, &retry, |conn| {
        common::record_end(conn, run.process_id, "completed", None)?;
        run.complete(conn, Uuid::new_v4())
    });
    match late {
        Err(Error::Conflict { found, .. }) => {
            println!("the late completion of the aborted run is refused: machine runs {found}");
        }
        other => println!("unexpected: {other:?}"),
    }
    next.complete(conn, Uuid::new_v4())?;
    common::print_history(conn, machine.id())
}
