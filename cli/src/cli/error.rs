//! What can go wrong in a command, and the exit code each outcome maps to.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use machine_state::{Error, State};
use uuid::Uuid;

/// How a command ended. The numbers are the documented exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 0: done.
    Success = 0,
    /// 1: a transition was refused, an inconsistency was found, or a
    /// migration gave up on the locks it needs (nothing of it applied).
    Refused = 1,
    /// 2: bad usage or input, or no usable database: nothing was applied.
    BadInput = 2,
    /// 3: the outcome of a transition is unknown (its operation id resolves
    /// it).
    OutcomeUnknown = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// An error that ends a command.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The library refused or failed.
    #[error(transparent)]
    Library(#[from] Error),

    /// The transition does not exist from the machine's current state.
    #[error("machine `{machine_id}` is `{state}`: only {sources} machine can be {done}")]
    Illegal {
        /// The machine.
        machine_id: Uuid,
        /// Its current state.
        state: State,
        /// The states the transition exists from, in words (``a `processing` ``).
        sources: String,
        /// The transition, as a past participle (`completed`).
        done: &'static str,
    },

    /// The database lacks some of this crate's migrations.
    #[error("the database lacks migration(s) {}: run `machine-state migrate` first", .pending.join(", "))]
    NotMigrated {
        /// The versions not applied.
        pending: Vec<String>,
    },

    /// The failure description file could not be read.
    #[error("cannot read the failure description from `{}`", .path.display())]
    ReadMessage {
        /// The file (`-` for standard input).
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The embedded server's data directory could not be locked.
    #[error("cannot lock `{}`", .path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The demo could not set itself up.
    #[error("{what}")]
    Demo {
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },

    /// An argument was refused before the database was touched.
    #[error("invalid input: {0}")]
    Input(String),

    /// The output could not be written (other than a closed pipe).
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
}

impl CliError {
    /// The exit code this error ends the command with.
    pub(crate) fn exit(&self) -> Exit {
        match self {
            CliError::Illegal { .. } => Exit::Refused,
            CliError::Library(error) => match error {
                Error::IllegalTransition { .. }
                | Error::Conflict { .. }
                | Error::Inconsistent { .. }
                | Error::UnknownState { .. }
                | Error::ProcessInUse(_)
                | Error::RetriesExhausted { .. }
                | Error::LockTimeout { .. }
                | Error::MigrationBlocked { .. }
                | Error::Blocked { .. } => Exit::Refused,
                Error::OutcomeUnknown { .. } => Exit::OutcomeUnknown,
                _ => Exit::BadInput,
            },
            CliError::NotMigrated { .. }
            | CliError::Demo { .. }
            | CliError::Lock { .. }
            | CliError::ReadMessage { .. }
            | CliError::Input(_)
            | CliError::Output(_) => Exit::BadInput,
        }
    }

    /// The error and its causes on one line (see [`one_line`]); for an
    /// unknown outcome, followed by how to resolve it.
    pub(crate) fn one_line(&self) -> String {
        let line = one_line(self);
        match self {
            CliError::Library(Error::OutcomeUnknown { operation_ids, .. }) => {
                match operation_ids.as_slice() {
                    [operation_id] => format!(
                        "{line}: it may have applied; run `machine-state operation \
                         {operation_id}`, or the same command once more with \
                         `--operation-id {operation_id}`"
                    ),
                    _ => line,
                }
            }
            _ => line,
        }
    }
}

/// An error and its chain of causes on one line (`error: cause: cause`), with
/// any line breaks of the causes (libpq's, the server log's) folded.
pub(crate) fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(line, ": {cause}");
        source = cause.source();
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_exit_with_1_and_bad_input_with_2() {
        let id = Uuid::nil();
        let conflict = Error::Conflict {
            machine_id: id,
            expected: machine_state::Status::new(State::Idle, None),
            found: machine_state::Status::new(State::Offline, None),
        };
        assert_eq!(CliError::from(conflict).exit(), Exit::Refused);
        assert_eq!(CliError::from(Error::NotFound(id)).exit(), Exit::BadInput);
        let blocked = Error::MigrationBlocked {
            migration: "2026-11-26-000001_create_machine_tables".into(),
            reverting: false,
            attempts: 3,
            waited: std::time::Duration::from_secs(2),
            blockers: Vec::new(),
        };
        assert_eq!(CliError::from(blocked).exit(), Exit::Refused);
        assert_eq!(
            CliError::from(Error::Migration("syntax error".into())).exit(),
            Exit::BadInput
        );
        assert_eq!(
            CliError::from(Error::NotMigrated("machines")).exit(),
            Exit::BadInput
        );
        assert_eq!(
            CliError::from(Error::OperationReused(id)).exit(),
            Exit::BadInput
        );
    }

    #[test]
    fn an_unknown_outcome_exits_with_3_naming_its_operation() {
        let operation_id = Uuid::nil();
        let error = CliError::from(Error::OutcomeUnknown {
            operation_ids: vec![operation_id],
            source: diesel::result::Error::BrokenTransactionManager,
        });
        assert_eq!(error.exit(), Exit::OutcomeUnknown);
        let line = error.one_line();
        assert!(
            line.contains(&format!("machine-state operation {operation_id}")),
            "{line}"
        );
        assert!(
            line.contains(&format!("--operation-id {operation_id}")),
            "{line}"
        );
    }

    #[test]
    fn the_cause_chain_is_one_line() {
        let error = CliError::ReadMessage {
            path: "-".into(),
            source: std::io::Error::other("first\n\tsecond"),
        };
        assert_eq!(
            error.one_line(),
            "cannot read the failure description from `-`: first second"
        );
    }
}
