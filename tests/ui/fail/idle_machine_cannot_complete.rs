use diesel::PgConnection;
use machine_state::{Idle, Machine};

fn complete(conn: &mut PgConnection, machine: Machine<Idle>) {
    let _ = machine.complete(conn);
}

fn main() {}
