use diesel::PgConnection;
use machine_state::{Machine, Offline, TransitionError};
use uuid::Uuid;

#[allow(dead_code)]
fn every_edge(conn: &mut PgConnection, machine: Machine<Offline>) -> Result<(), machine_state::Error> {
    let idle = machine.bring_online(conn)?;
    let offline = idle.take_offline(conn)?;
    let processing = offline.start(conn, Uuid::new_v4())?;
    let idle = processing.complete(conn)?;
    let idle = idle.start(conn, Uuid::new_v4())?.stop(conn)?;
    let errored = idle.start(conn, Uuid::new_v4())?.fail(conn, "heater fault")?;
    let idle = errored.reset(conn)?;
    let errored = idle.start(conn, Uuid::new_v4())?.fail(conn, "heater fault")?;
    let _offline: Machine<Offline> = errored.take_offline(conn)?;
    Ok(())
}

#[allow(dead_code)]
fn refused_transitions_hand_the_machine_back(conn: &mut PgConnection, machine: Machine<Offline>) {
    let _again: Machine<Offline> = match machine.bring_online(conn) {
        Ok(idle) => idle.take_offline(conn).unwrap(),
        Err(TransitionError { machine, .. }) => machine,
    };
}

fn main() {}
