//! `Machine<S>`: a machine whose state is known at compile time.
//!
//! Each source state's transitions live in the file named after it
//! (`idle.rs` holds what an idle machine can do); they all go through the one
//! write path in `crate::write`.

mod any;
mod errored;
mod idle;
mod offline;
mod processing;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::PgConnection;
use uuid::Uuid;

pub use any::{Action, AnyMachine};

use crate::error::{Error, TransitionError};
use crate::retry::RetryPolicy;
use crate::state::{State, Verb};
use crate::write::{self, Change, Settings, WritePath};

/// The longest failure description accepted, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4096;

/// A machine known to be in state `S` as of its last load or transition.
///
/// Transitions are methods that exist only on the source state's type and
/// consume `self`, so an illegal transition does not compile:
///
/// ```compile_fail
/// # use machine_state::{Machine, Idle};
/// # fn demo(conn: &mut diesel::PgConnection, idle: Machine<Idle>) {
/// // An idle machine runs no recipe, so there is nothing to complete.
/// let _ = idle.complete(conn);
/// # }
/// ```
///
/// A transition that the database refuses (the machine moved on since it was
/// loaded, say) returns a [`TransitionError`] holding this machine unchanged,
/// and writes nothing.
///
/// Not `Clone`: a `Machine<S>` stands for "the machine is in `S` now", and a
/// copy would walk around the typestate (the second use of a consumed state
/// would compile). To act on the machine again, load it
/// ([`AnyMachine::load`]).
pub struct Machine<S: MachineState> {
    id: Uuid,
    state: S,
    since: DateTime<Utc>,
    settings: Settings,
    operation_id: Option<Uuid>,
}

/// The result of a transition from `Machine<S>` to `Machine<T>`.
pub type Transition<S, T> = Result<Machine<T>, TransitionError<Machine<S>>>;

mod sealed {
    pub trait Sealed {}
}

/// The state markers [`Offline`], [`Idle`], [`Processing`] and [`Errored`].
///
/// Sealed: the four states are the domain's, not extensible.
pub trait MachineState: sealed::Sealed + fmt::Debug + Clone {
    /// The runtime value of this state.
    const STATE: State;

    /// The process this state runs, if any.
    fn process_id(&self) -> Option<Uuid> {
        None
    }
}

/// Marker: the machine is offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offline;

/// Marker: the machine is online and waiting for a recipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Idle;

/// Marker: the machine runs the recipe process `process_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Processing {
    pub(crate) process_id: Uuid,
}

/// Marker: the machine stopped on a failure, described by `description`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Errored {
    description: String,
}

impl sealed::Sealed for Offline {}
impl sealed::Sealed for Idle {}
impl sealed::Sealed for Processing {}
impl sealed::Sealed for Errored {}

impl MachineState for Offline {
    const STATE: State = State::Offline;
}

impl MachineState for Idle {
    const STATE: State = State::Idle;
}

impl MachineState for Processing {
    const STATE: State = State::Processing;

    fn process_id(&self) -> Option<Uuid> {
        Some(self.process_id)
    }
}

impl MachineState for Errored {
    const STATE: State = State::Errored;
}

/// The states a machine can be registered in.
pub trait InitialState: MachineState {
    /// The marker value.
    #[doc(hidden)]
    fn initial() -> Self;
}

impl InitialState for Offline {
    fn initial() -> Self {
        Offline
    }
}

impl InitialState for Idle {
    fn initial() -> Self {
        Idle
    }
}

impl<S: InitialState> Machine<S> {
    /// Register a new machine in state `S` (`Offline` or `Idle`): both rows
    /// and a history entry, in one transaction.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`] if the id is taken; database errors otherwise.
    pub fn create(conn: &mut PgConnection, id: Uuid) -> Result<Self, Error> {
        let since = write::create(conn, id, S::STATE, crate::history::new_operation_id())?;
        Ok(Machine::from_parts(id, S::initial(), since))
    }
}

impl<S: MachineState> Machine<S> {
    pub(crate) fn from_parts(id: Uuid, state: S, since: DateTime<Utc>) -> Self {
        Machine {
            id,
            state,
            since,
            settings: Settings::default(),
            operation_id: None,
        }
    }

    /// These settings for this machine's transitions.
    pub(crate) fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// The machine's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The state, as a runtime value.
    pub fn state(&self) -> State {
        S::STATE
    }

    /// When the machine entered this state (`machine_state.state_since`).
    pub fn since(&self) -> DateTime<Utc> {
        self.since
    }

    /// The retry policy of this machine's transitions (defaults to
    /// [`RetryPolicy::default`]).
    pub fn retry_policy(&self) -> RetryPolicy {
        self.settings.retry
    }

    /// Use `policy` for this machine's transitions and those of the machines
    /// they return.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.settings.retry = policy;
        self
    }

    /// How this machine's transitions reach the tables (defaults to
    /// [`WritePath::Statement`]).
    pub fn write_path(&self) -> WritePath {
        self.settings.write_path
    }

    /// Use `path` for this machine's transitions and those of the machines
    /// they return.
    pub fn with_write_path(mut self, path: WritePath) -> Self {
        self.settings.write_path = path;
        self
    }

    /// How long this machine's transitions wait for a row lock held by
    /// another session (defaults to [`DEFAULT_LOCK_TIMEOUT`](crate::DEFAULT_LOCK_TIMEOUT), 5 s).
    pub fn lock_timeout(&self) -> Duration {
        self.settings.lock_timeout
    }

    /// Wait at most `limit` (whole milliseconds) for a row lock held by
    /// another session, in this machine's transitions and those of the
    /// machines they return; then the transition is refused with
    /// [`Error::LockTimeout`], naming the holder, and writes nothing.
    /// `Duration::ZERO` waits without limit. [`WritePath::SqlFunction`]
    /// transitions use the SQL function's own limit instead (5 s, its
    /// `lock_timeout` setting: `ALTER FUNCTION` changes it).
    pub fn with_lock_timeout(mut self, limit: Duration) -> Self {
        self.settings.lock_timeout = limit;
        self
    }

    /// Use `operation_id` for the next transition instead of a fresh one
    /// ([`new_operation_id`](crate::new_operation_id)).
    ///
    /// Retrying a transition whose outcome is unknown
    /// ([`Error::OutcomeUnknown`]) with the same operation id applies it at
    /// most once: if the first attempt committed, the retry reports that
    /// outcome and writes nothing.
    pub fn with_operation_id(mut self, operation_id: Uuid) -> Self {
        self.operation_id = Some(operation_id);
        self
    }

    /// Run the transition `S -> T` through the write path, handing `self`
    /// back on refusal.
    fn transition<T: MachineState>(
        mut self,
        conn: &mut PgConnection,
        verb: Verb,
        to: T,
        description: Option<&str>,
    ) -> Transition<S, T> {
        let operation_id = self
            .operation_id
            .take()
            .unwrap_or_else(crate::history::new_operation_id);
        let change = Change {
            machine_id: self.id,
            verb,
            from: S::STATE,
            expected_process: self.state.process_id(),
            to: T::STATE,
            new_process: to.process_id(),
            description,
            operation_id,
            lock_limit: self.settings.lock_timeout,
        };
        let result = write::apply(conn, &change, &self.settings);
        crate::telemetry::log_outcome(
            change.machine_id,
            change.verb,
            change.from,
            change.to,
            change.operation_id,
            &result,
        );
        match result {
            Ok(since) => Ok(Machine {
                id: self.id,
                state: to,
                since,
                settings: self.settings,
                operation_id: None,
            }),
            Err(error) => Err(TransitionError {
                machine: self,
                error,
            }),
        }
    }
}

/// Check a failure description the way [`Machine::<Processing>::fail`]
/// will, before anything is sent to the database: not blank (Unicode
/// whitespace), no NUL byte, at most [`MAX_DESCRIPTION_CHARS`] characters.
/// The SQL functions check the same.
///
/// # Errors
///
/// [`Error::InvalidInput`] saying which rule the description breaks.
pub fn validate_description(description: &str) -> Result<(), Error> {
    if description.trim().is_empty() {
        return Err(Error::InvalidInput(
            "a failure description must not be empty".into(),
        ));
    }
    if description.contains('\0') {
        return Err(Error::InvalidInput(
            "a failure description must not contain NUL bytes".into(),
        ));
    }
    let chars = description.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(Error::InvalidInput(format!(
            "a failure description is limited to {MAX_DESCRIPTION_CHARS} characters, got {chars}"
        )));
    }
    Ok(())
}

impl<S: MachineState> fmt::Debug for Machine<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Machine")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}
