//! What an idle machine can do: start a recipe, or go offline.

use diesel::PgConnection;
use uuid::Uuid;

use super::{Idle, Machine, Offline, Processing, Transition};
use crate::state::Verb;

impl Machine<Idle> {
    /// `idle -> processing`: start the recipe run `process_id`.
    ///
    /// # Errors
    ///
    /// Gives the machine back with [`Error::Conflict`](crate::Error::Conflict)
    /// if it is not idle any more (another starter won, say), or any other
    /// [`Error`](crate::Error); nothing is written then.
    pub fn start(self, conn: &mut PgConnection, process_id: Uuid) -> Transition<Idle, Processing> {
        self.transition(conn, Verb::Start, Processing { process_id }, None)
    }

    /// `idle -> offline`: the machine is taken out of service.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn take_offline(self, conn: &mut PgConnection) -> Transition<Idle, Offline> {
        self.transition(conn, Verb::TakeOffline, Offline, None)
    }
}
