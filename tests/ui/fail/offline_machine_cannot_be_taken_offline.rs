use diesel::PgConnection;
use machine_state::{Machine, Offline};

fn take_offline(conn: &mut PgConnection, machine: Machine<Offline>) {
    let _ = machine.take_offline(conn);
}

fn main() {}
