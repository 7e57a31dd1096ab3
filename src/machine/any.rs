//! `AnyMachine`: the runtime bridge from rows to typed machines.

use chrono::{DateTime, Utc};
use diesel::PgConnection;
use uuid::Uuid;

use super::{Errored, Idle, Machine, Offline, Processing};
use crate::error::{Error, TransitionError};
use crate::pair::{Pair, Violation};
use crate::state::{State, Verb};

/// A machine whose state is known only at run time: loaded from the
/// database, it hands out the typed [`Machine`] for its state (by `match`,
/// or `Machine::<Idle>::try_from(any)`, which hands the `AnyMachine` back
/// when it is in another state).
///
/// Not `Clone`, as [`Machine`] is not: a value stands for "the machine is
/// in this state now" and is used once.
#[derive(Debug)]
pub enum AnyMachine {
    /// An offline machine.
    Offline(Machine<Offline>),
    /// An idle machine.
    Idle(Machine<Idle>),
    /// A processing machine.
    Processing(Machine<Processing>),
    /// A machine in error.
    Errored(Machine<Errored>),
}

macro_rules! typed_from_any {
    ($($state:ident),*) => {$(
        impl TryFrom<AnyMachine> for Machine<$state> {
            type Error = AnyMachine;

            /// The typed machine, or the `AnyMachine` back when it is in
            /// another state.
            fn try_from(any: AnyMachine) -> Result<Self, AnyMachine> {
                match any {
                    AnyMachine::$state(machine) => Ok(machine),
                    other => Err(other),
                }
            }
        }
    )*};
}

typed_from_any!(Offline, Idle, Processing, Errored);

/// A transition named at run time (from a command line, a queue, a test).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// [`Machine<Offline>::bring_online`].
    BringOnline,
    /// [`Machine<Idle>::take_offline`] or [`Machine<Errored>::take_offline`].
    TakeOffline,
    /// [`Machine<Idle>::start`] or [`Machine<Offline>::start`] with this process id.
    Start(Uuid),
    /// [`Machine<Processing>::complete`].
    Complete,
    /// [`Machine<Processing>::stop`].
    Stop,
    /// [`Machine<Processing>::fail`] with this description.
    Fail(String),
    /// [`Machine<Errored>::reset`].
    Reset,
}

impl Action {
    /// Which transition this is, without its argument.
    pub fn verb(&self) -> Verb {
        match self {
            Action::BringOnline => Verb::BringOnline,
            Action::TakeOffline => Verb::TakeOffline,
            Action::Start(_) => Verb::Start,
            Action::Complete => Verb::Complete,
            Action::Stop => Verb::Stop,
            Action::Fail(_) => Verb::Fail,
            Action::Reset => Verb::Reset,
        }
    }

    /// The state this action leads to.
    pub fn target(&self) -> State {
        self.verb().target()
    }
}

impl AnyMachine {
    /// Load a machine, reading both of its rows in one statement (one
    /// snapshot).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown id; [`Error::UnknownState`] for a
    /// state string this crate does not know; [`Error::Inconsistent`] when the
    /// two rows disagree or break I1–I4 together (a stale timestamp, I5, is
    /// left to the audit); database errors otherwise.
    pub fn load(conn: &mut PgConnection, id: Uuid) -> Result<AnyMachine, Error> {
        let pair = Pair::load(conn, id)
            .map_err(|error| crate::connection::mark_broken_if_gone(conn, error))
            .map_err(crate::migrations::explain_missing_tables)?
            .ok_or(Error::NotFound(id))?;
        AnyMachine::from_pair(&pair)
    }

    /// Build the typed machine from a pair, refusing any pair that breaks
    /// I1–I4.
    pub(crate) fn from_pair(pair: &Pair) -> Result<AnyMachine, Error> {
        let id = pair.machine_id;
        let violations: Vec<Violation> = pair
            .violations()
            .into_iter()
            .filter(|v| v.breaks_state())
            .collect();
        let state = match (pair.status.parse::<State>(), &pair.state) {
            (Err(_), _) => {
                return Err(Error::UnknownState {
                    machine_id: id,
                    state: pair.status.clone(),
                });
            }
            (Ok(state), Some(row)) if violations.is_empty() => (state, row),
            _ if violations == [Violation::UnknownState] => {
                let state = pair.state.as_ref().map(|row| row.current_state.clone());
                return Err(Error::UnknownState {
                    machine_id: id,
                    state: state.unwrap_or_default(),
                });
            }
            _ => {
                return Err(pair.inconsistent(violations));
            }
        };
        let (state, row) = state;
        let since = row.state_since;
        // The checks above guarantee the process id in `processing` and the
        // description in `error`.
        Ok(match (state, row.process_id, &row.failure_description) {
            (State::Processing, Some(process_id), _) => {
                AnyMachine::Processing(Machine::from_parts(id, Processing { process_id }, since))
            }
            (State::Errored, _, Some(description)) => AnyMachine::Errored(Machine::from_parts(
                id,
                Errored {
                    description: description.clone(),
                },
                since,
            )),
            (State::Idle, ..) => AnyMachine::Idle(Machine::from_parts(id, Idle, since)),
            (State::Offline, ..) => AnyMachine::Offline(Machine::from_parts(id, Offline, since)),
            _ => {
                return Err(pair.inconsistent(violations));
            }
        })
    }

    /// The machine's id.
    pub fn id(&self) -> Uuid {
        match self {
            AnyMachine::Offline(m) => m.id(),
            AnyMachine::Idle(m) => m.id(),
            AnyMachine::Processing(m) => m.id(),
            AnyMachine::Errored(m) => m.id(),
        }
    }

    /// The machine's state.
    pub fn state(&self) -> State {
        match self {
            AnyMachine::Offline(_) => State::Offline,
            AnyMachine::Idle(_) => State::Idle,
            AnyMachine::Processing(_) => State::Processing,
            AnyMachine::Errored(_) => State::Errored,
        }
    }

    /// How the machine's transitions reach the tables (see
    /// [`Machine::write_path`]).
    pub fn write_path(&self) -> crate::WritePath {
        match self {
            AnyMachine::Offline(m) => m.write_path(),
            AnyMachine::Idle(m) => m.write_path(),
            AnyMachine::Processing(m) => m.write_path(),
            AnyMachine::Errored(m) => m.write_path(),
        }
    }

    /// When the machine entered its state.
    pub fn since(&self) -> DateTime<Utc> {
        match self {
            AnyMachine::Offline(m) => m.since(),
            AnyMachine::Idle(m) => m.since(),
            AnyMachine::Processing(m) => m.since(),
            AnyMachine::Errored(m) => m.since(),
        }
    }

    /// The process the machine runs, when processing.
    pub fn process_id(&self) -> Option<Uuid> {
        match self {
            AnyMachine::Processing(m) => Some(m.process_id()),
            _ => None,
        }
    }

    /// The failure description, when in error.
    pub fn description(&self) -> Option<&str> {
        match self {
            AnyMachine::Errored(m) => Some(m.description()),
            _ => None,
        }
    }

    /// Use `operation_id` for the next transition (see
    /// [`Machine::with_operation_id`]).
    pub fn with_operation_id(self, operation_id: Uuid) -> AnyMachine {
        match self {
            AnyMachine::Offline(m) => AnyMachine::Offline(m.with_operation_id(operation_id)),
            AnyMachine::Idle(m) => AnyMachine::Idle(m.with_operation_id(operation_id)),
            AnyMachine::Processing(m) => AnyMachine::Processing(m.with_operation_id(operation_id)),
            AnyMachine::Errored(m) => AnyMachine::Errored(m.with_operation_id(operation_id)),
        }
    }

    /// Use `policy` for this machine's transitions (see
    /// [`Machine::with_retry_policy`]).
    pub fn with_retry_policy(self, policy: crate::RetryPolicy) -> AnyMachine {
        match self {
            AnyMachine::Offline(m) => AnyMachine::Offline(m.with_retry_policy(policy)),
            AnyMachine::Idle(m) => AnyMachine::Idle(m.with_retry_policy(policy)),
            AnyMachine::Processing(m) => AnyMachine::Processing(m.with_retry_policy(policy)),
            AnyMachine::Errored(m) => AnyMachine::Errored(m.with_retry_policy(policy)),
        }
    }

    /// Wait at most `limit` for another session's row lock (see
    /// [`Machine::with_lock_timeout`]).
    pub fn with_lock_timeout(self, limit: std::time::Duration) -> AnyMachine {
        match self {
            AnyMachine::Offline(m) => AnyMachine::Offline(m.with_lock_timeout(limit)),
            AnyMachine::Idle(m) => AnyMachine::Idle(m.with_lock_timeout(limit)),
            AnyMachine::Processing(m) => AnyMachine::Processing(m.with_lock_timeout(limit)),
            AnyMachine::Errored(m) => AnyMachine::Errored(m.with_lock_timeout(limit)),
        }
    }

    /// Use `path` for this machine's transitions (see
    /// [`Machine::with_write_path`]).
    pub fn with_write_path(self, path: crate::WritePath) -> AnyMachine {
        match self {
            AnyMachine::Offline(m) => AnyMachine::Offline(m.with_write_path(path)),
            AnyMachine::Idle(m) => AnyMachine::Idle(m.with_write_path(path)),
            AnyMachine::Processing(m) => AnyMachine::Processing(m.with_write_path(path)),
            AnyMachine::Errored(m) => AnyMachine::Errored(m.with_write_path(path)),
        }
    }

    /// Run the typed transition that `action` names from this machine's
    /// state.
    ///
    /// # Errors
    ///
    /// [`Error::IllegalTransition`] (nothing sent to the database) when the
    /// current state has no such transition; otherwise as the typed method.
    /// The machine is handed back unchanged either way.
    pub fn perform(
        self,
        conn: &mut PgConnection,
        action: &Action,
    ) -> Result<AnyMachine, TransitionError<AnyMachine>> {
        use AnyMachine as A;
        let legal = self.state().transitions().any(|t| t.verb == action.verb());
        if !legal {
            return Err(self.illegal(action));
        }
        fn back<M>(
            result: Result<AnyMachine, TransitionError<Machine<M>>>,
            wrap: fn(Machine<M>) -> AnyMachine,
        ) -> Result<AnyMachine, TransitionError<AnyMachine>>
        where
            M: super::MachineState,
        {
            result.map_err(|e| TransitionError {
                machine: wrap(e.machine),
                error: e.error,
            })
        }
        match (self, action) {
            (A::Offline(m), Action::BringOnline) => {
                back(m.bring_online(conn).map(A::Idle), A::Offline)
            }
            (A::Offline(m), Action::Start(p)) => {
                back(m.start(conn, *p).map(A::Processing), A::Offline)
            }
            (A::Idle(m), Action::Start(p)) => back(m.start(conn, *p).map(A::Processing), A::Idle),
            (A::Idle(m), Action::TakeOffline) => {
                back(m.take_offline(conn).map(A::Offline), A::Idle)
            }
            (A::Processing(m), Action::Complete) => {
                back(m.complete(conn).map(A::Idle), A::Processing)
            }
            (A::Processing(m), Action::Stop) => back(m.stop(conn).map(A::Idle), A::Processing),
            (A::Processing(m), Action::Fail(d)) => {
                back(m.fail(conn, d).map(A::Errored), A::Processing)
            }
            (A::Errored(m), Action::Reset) => back(m.reset(conn).map(A::Idle), A::Errored),
            (A::Errored(m), Action::TakeOffline) => {
                back(m.take_offline(conn).map(A::Offline), A::Errored)
            }
            // In the table but without a typed method: the mirror drifted
            // (the `typestate_is_the_transition_table` test fails first).
            (machine, action) => Err(machine.illegal(action)),
        }
    }

    /// The refusal of `action` from this machine's state, with the machine
    /// (counted, see `crate::telemetry`).
    fn illegal(self, action: &Action) -> TransitionError<AnyMachine> {
        let error = Error::IllegalTransition {
            machine_id: self.id(),
            from: self.state(),
            to: action.target(),
        };
        let path = self.write_path();
        crate::telemetry::refused_early(self.state(), action.target(), path, &error);
        TransitionError {
            error,
            machine: self,
        }
    }
}
