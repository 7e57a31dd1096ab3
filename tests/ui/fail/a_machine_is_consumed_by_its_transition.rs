use diesel::PgConnection;
use machine_state::{Machine, Offline};

fn twice(conn: &mut PgConnection, machine: Machine<Offline>) {
    let _idle = machine.bring_online(conn);
    let _again = machine.bring_online(conn);
}

fn main() {}
