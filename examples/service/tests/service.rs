//! The service's tests, on the crate's testing kit as its documentation
//! shows it: one server in a `static` for the whole binary, a fresh
//! migrated database per test. Nothing is left behind when the binary exits.

use std::sync::OnceLock;

use machine_state::testing::{TestServer, assert_all_consistent};
use machine_state::uuid::Uuid;
use machine_state::{Error, Machine, Offline, new_operation_id};
use recipe_service::{ServiceError, complete, migrate, resolve, start};

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| TestServer::start().expect("a test server"))
}

fn idle_machine(conn: &mut machine_state::diesel::PgConnection) -> Uuid {
    let machine = Machine::<Offline>::create(conn, Uuid::new_v4()).unwrap();
    machine.bring_online(conn).unwrap().id()
}

#[test]
fn a_recipe_runs_and_completes_with_its_row() -> Result<(), ServiceError> {
    let db = server().database()?;
    let conn = &mut db.connect()?;
    migrate(conn)?;
    let machine = idle_machine(conn);
    let run = start(conn, machine, Uuid::new_v4(), "ALD 40 cycles", new_operation_id())?;
    complete(conn, &run, new_operation_id())?;
    assert_all_consistent(conn);
    Ok(())
}

#[test]
fn of_two_starters_one_wins_and_the_other_writes_nothing() -> Result<(), ServiceError> {
    let db = server().database()?;
    let conn = &mut db.connect()?;
    migrate(conn)?;
    let machine = idle_machine(conn);
    start(conn, machine, Uuid::new_v4(), "first", new_operation_id())?;
    let second = start(conn, machine, Uuid::new_v4(), "second", new_operation_id());
    assert!(matches!(second, Err(ServiceError::Machine(Error::Conflict { .. }))));
    assert_all_consistent(conn);
    Ok(())
}

#[test]
fn a_rejected_recipe_rolls_back_with_the_services_own_reason() -> Result<(), ServiceError> {
    let db = server().database()?;
    let conn = &mut db.connect()?;
    migrate(conn)?;
    let machine = idle_machine(conn);
    let operation = new_operation_id();
    let refused = start(conn, machine, Uuid::new_v4(), " ", operation);
    assert!(matches!(refused, Err(ServiceError::Rejected(_))));
    assert!(!resolve(conn, &[operation])?, "nothing applied");
    Ok(())
}
