//! What a machine in error can do: be reset to idle, or taken offline.

use diesel::PgConnection;

use super::{Errored, Idle, Machine, Offline, Transition};
use crate::state::Verb;

impl Machine<Errored> {
    /// What went wrong (`machine_state.failure_description`).
    pub fn description(&self) -> &str {
        &self.state.description
    }

    /// `error -> idle`: the failure was dealt with and the machine is ready.
    ///
    /// # Errors
    ///
    /// Gives the machine back with [`Error::Conflict`](crate::Error::Conflict)
    /// if it is not in error any more, or any other [`Error`](crate::Error);
    /// nothing is written then.
    pub fn reset(self, conn: &mut PgConnection) -> Transition<Errored, Idle> {
        self.transition(conn, Verb::Reset, Idle, None)
    }

    /// `error -> offline`: the machine is taken out of service for repair.
    ///
    /// # Errors
    ///
    /// As [`reset`](Self::reset).
    pub fn take_offline(self, conn: &mut PgConnection) -> Transition<Errored, Offline> {
        self.transition(conn, Verb::TakeOffline, Offline, None)
    }
}
