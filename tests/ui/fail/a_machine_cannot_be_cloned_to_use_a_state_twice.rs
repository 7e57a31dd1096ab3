use diesel::PgConnection;
use machine_state::{Machine, Processing};

// A copy would let one "processing" be completed twice.
fn twice(conn: &mut PgConnection, machine: Machine<Processing>) {
    let copy = machine.clone();
    let _idle = machine.complete(conn);
    let _again = copy.complete(conn);
}

fn main() {}
