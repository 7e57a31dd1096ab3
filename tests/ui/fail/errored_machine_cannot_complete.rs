use diesel::PgConnection;
use machine_state::{Errored, Machine};

fn complete(conn: &mut PgConnection, machine: Machine<Errored>) {
    let _ = machine.complete(conn);
}

fn main() {}
