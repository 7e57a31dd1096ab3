//! One worker step with this crate: load, decide, work, one guarded
//! transition.

use diesel::prelude::*;
use machine_state::{Action, AnyMachine, Error};
use uuid::Uuid;

use super::workload::{FAILURE, Role, Step, Workload};

/// One step of a worker with this crate: load the machine, decide, do the
/// same work as the legacy worker, then one guarded transition.
pub(super) fn crate_step(
    conn: &mut PgConnection,
    role: Role,
    id: Uuid,
    work: &Workload,
) -> Result<Step, Error> {
    let machine = AnyMachine::load(conn, id)?;
    let action = match (role, &machine) {
        (Role::Starter, AnyMachine::Offline(_) | AnyMachine::Idle(_)) => {
            Action::Start(Uuid::new_v4())
        }
        (Role::Executor, AnyMachine::Processing(_)) if work.recipe_fails() => {
            Action::Fail(FAILURE.to_owned())
        }
        (Role::Executor, AnyMachine::Processing(_)) => Action::Complete,
        (Role::Stopper, AnyMachine::Processing(_)) => Action::Stop,
        (Role::Stopper, AnyMachine::Errored(_)) => Action::Reset,
        _ => return Ok(Step::NothingToDo),
    };
    work.before(role);
    work.between(role);
    if work.stopped() {
        return Ok(Step::Interrupted);
    }
    match machine.perform(conn, &action) {
        Ok(_) => Ok(Step::Applied),
        Err(refused) => match refused.error {
            Error::Conflict { .. } | Error::RetriesExhausted { .. } => Ok(Step::Refused),
            error => Err(error),
        },
    }
}
