use diesel::PgConnection;
use machine_state::{Machine, Processing};
use uuid::Uuid;

fn start(conn: &mut PgConnection, machine: Machine<Processing>) {
    let _ = machine.start(conn, Uuid::new_v4());
}

fn main() {}
