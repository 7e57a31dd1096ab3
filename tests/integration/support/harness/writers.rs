//! Writers: the crate's write path, and what became of each step.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use machine_state::{Action, AnyMachine, Error, RetryPolicy, TransitionError};
use uuid::Uuid;

/// What became of one step, as the worker saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A load that returned a machine.
    Loaded,
    /// A load whose connection broke (only under injected faults).
    LoadLost,
    /// A load through `AnyMachine` found the two rows disagreeing.
    Diverged,
    /// The transition was acknowledged.
    Applied,
    /// The transition was refused with a typed error and must have written
    /// nothing.
    Refused(Refusal),
    /// The connection broke: it applied at most once.
    Unknown,
    /// Anything else (an untyped error, say): the case fails.
    Failed(String),
}

/// The typed refusals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `Error::Conflict`: the machine moved on.
    Conflict,
    /// `Error::IllegalTransition`: not a transition of the worker's copy.
    Illegal,
    /// `Error::InvalidInput`: a blank failure description.
    InvalidInput,
    /// `Error::RetriesExhausted`: every attempt lost a race.
    RetriesExhausted,
}

/// Runs a worker's ops: the crate, or the legacy pattern.
pub(crate) trait Writer: Sync {
    /// The worker's copy of a machine.
    type View: Send;

    /// Read a machine the way this writer's code does before it acts.
    fn load(&self, conn: &mut PgConnection, id: Uuid) -> Result<Self::View, Error>;

    /// The worker's copy made from a machine loaded through `AnyMachine`.
    fn adopt(&self, machine: AnyMachine) -> Self::View;

    /// Run `action` on the machine as the worker's copy `view` has it, under
    /// `operation_id`; returns the outcome and the worker's next copy (`None`:
    /// read it again before the next op).
    fn perform(
        &self,
        conn: &mut PgConnection,
        view: Self::View,
        action: &Action,
        operation_id: Uuid,
    ) -> (Outcome, Option<Self::View>);
}

/// The crate's typed API, through `AnyMachine::perform`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CrateWriter {
    /// The retry policy of every transition.
    pub(crate) retry: RetryPolicy,
}

impl Writer for CrateWriter {
    type View = AnyMachine;

    fn load(&self, conn: &mut PgConnection, id: Uuid) -> Result<AnyMachine, Error> {
        AnyMachine::load(conn, id)
    }

    fn adopt(&self, machine: AnyMachine) -> AnyMachine {
        machine
    }

    fn perform(
        &self,
        conn: &mut PgConnection,
        view: AnyMachine,
        action: &Action,
        operation_id: Uuid,
    ) -> (Outcome, Option<AnyMachine>) {
        let result = view
            .with_retry_policy(self.retry)
            .with_operation_id(operation_id)
            .perform(conn, action);
        match result {
            Ok(next) => (Outcome::Applied, Some(next)),
            Err(TransitionError { machine, error }) => match error {
                Error::Conflict { .. } => (Outcome::Refused(Refusal::Conflict), None),
                Error::IllegalTransition { .. } => {
                    (Outcome::Refused(Refusal::Illegal), Some(machine))
                }
                Error::InvalidInput(_) => (Outcome::Refused(Refusal::InvalidInput), Some(machine)),
                Error::RetriesExhausted { .. } => {
                    (Outcome::Refused(Refusal::RetriesExhausted), None)
                }
                Error::OutcomeUnknown {
                    operation_ids: reported,
                    ..
                } if reported == [operation_id] => (Outcome::Unknown, None),
                error => (Outcome::Failed(describe(&error)), None),
            },
        }
    }
}

/// An error with its chain of sources, for failure messages.
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Whether a crate error says the connection broke.
pub(crate) fn is_connection_lost(error: &Error) -> bool {
    match error {
        Error::OutcomeUnknown { .. } => true,
        Error::Database(error) => diesel_connection_lost(error),
        _ => false,
    }
}

/// Whether a diesel error says the connection broke (libpq's own "server
/// closed the connection unexpectedly" may come with kind `Unknown`).
pub(crate) fn diesel_connection_lost(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        )
        | DieselError::BrokenTransactionManager => true,
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) => info
            .message()
            .starts_with("server closed the connection unexpectedly"),
        _ => false,
    }
}
