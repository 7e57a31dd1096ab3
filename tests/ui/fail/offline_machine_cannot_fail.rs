use diesel::PgConnection;
use machine_state::{Machine, Offline};

fn fail(conn: &mut PgConnection, machine: Machine<Offline>) {
    let _ = machine.fail(conn, "no recipe runs on an offline machine");
}

fn main() {}
