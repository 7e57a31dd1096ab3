//! The starter: put an idle machine to work on a new recipe run, and record
//! the run in `process_executions` in the same transaction. A second starter
//! racing for the same machine is refused and told which run won.
//!
//! `cargo run --example starter` (embedded database, or `DATABASE_URL`).

#[path = "common/mod.rs"]
mod common;

use machine_state::{Error, Machine, Offline, RecipeRun, RetryPolicy, transaction};
use uuid::Uuid;

fn main() -> Result<(), Error> {
    let db = common::open()?;
    let conn = &mut db.pool.get()?;
    let machine = Machine::<Offline>::create(conn, Uuid::new_v4())?.bring_online(conn)?;
    println!("machine {} is {}", machine.id(), machine.state());

    let run = RecipeRun::on(machine.id()).run(Uuid::new_v4());
    let operation = Uuid::new_v4(); // reuse it to retry this very start safely
    let processing = transaction(conn, &RetryPolicy::default(), |conn| {
        let processing = run.start(conn, operation)?;
        common::record_start(conn, run.machine_id, run.process_id)?;
        Ok::<_, machine_state::Error>(processing)
    })?;
    println!(
        "started run {} at {}",
        processing.process_id(),
        processing.since()
    );

    let rival = RecipeRun::on(machine.id()).run(Uuid::new_v4());
    match rival.start(conn, Uuid::new_v4()) {
        Err(Error::Conflict { found, .. }) => {
            println!("a second starter is refused: the machine is already {found}");
        }
        other => println!("unexpected: {other:?}"),
    }
    common::print_history(conn, machine.id())
}
