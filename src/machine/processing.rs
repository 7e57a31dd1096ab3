//! What a processing machine can do: complete its recipe, be stopped, or fail.
//!
//! Each of these is fenced by the process id: it applies only if the machine
//! still runs the process this typed machine was started with, so a late
//! `complete` from an old run can never close a newer one.

use diesel::PgConnection;
use uuid::Uuid;

use super::{Errored, Idle, Machine, Processing, Transition, validate_description};
use crate::error::TransitionError;
use crate::state::Verb;

impl Machine<Processing> {
    /// The recipe run this machine is processing.
    pub fn process_id(&self) -> Uuid {
        self.state.process_id
    }

    /// `processing -> idle`: the recipe finished.
    ///
    /// # Errors
    ///
    /// Gives the machine back with [`Error::Conflict`](crate::Error::Conflict)
    /// if it no longer runs this process, or any other
    /// [`Error`](crate::Error); nothing is written then.
    pub fn complete(self, conn: &mut PgConnection) -> Transition<Processing, Idle> {
        self.transition(conn, Verb::Complete, Idle, None)
    }

    /// `processing -> idle`: a user aborted the recipe.
    ///
    /// # Errors
    ///
    /// As [`complete`](Self::complete).
    pub fn stop(self, conn: &mut PgConnection) -> Transition<Processing, Idle> {
        self.transition(conn, Verb::Stop, Idle, None)
    }

    /// `processing -> error`: the recipe failed with `description`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for an empty
    /// description, one with NUL bytes, or one over
    /// [`MAX_DESCRIPTION_CHARS`](crate::MAX_DESCRIPTION_CHARS); otherwise as
    /// [`complete`](Self::complete).
    pub fn fail(
        self,
        conn: &mut PgConnection,
        description: &str,
    ) -> Transition<Processing, Errored> {
        if let Err(error) = validate_description(description) {
            crate::telemetry::refused_early(
                crate::State::Processing,
                crate::State::Errored,
                self.write_path(),
                &error,
            );
            return Err(TransitionError {
                machine: self,
                error,
            });
        }
        let errored = Errored {
            description: description.to_owned(),
        };
        self.transition(conn, Verb::Fail, errored, Some(description))
    }
}
