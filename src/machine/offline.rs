//! What an offline machine can do: come online, or start a recipe directly.

use diesel::PgConnection;
use uuid::Uuid;

use super::{Idle, Machine, Offline, Processing, Transition};
use crate::state::Verb;

impl Machine<Offline> {
    /// `offline -> idle`: the machine is powered up and ready.
    ///
    /// # Errors
    ///
    /// Gives the machine back with [`Error::Conflict`](crate::Error::Conflict)
    /// if it is not offline any more, or any other [`Error`](crate::Error);
    /// nothing is written then.
    pub fn bring_online(self, conn: &mut PgConnection) -> Transition<Offline, Idle> {
        self.transition(conn, Verb::BringOnline, Idle, None)
    }

    /// `offline -> processing`: start the recipe run `process_id` (the legacy
    /// starter accepted offline machines).
    ///
    /// # Errors
    ///
    /// As [`bring_online`](Self::bring_online).
    pub fn start(
        self,
        conn: &mut PgConnection,
        process_id: Uuid,
    ) -> Transition<Offline, Processing> {
        self.transition(conn, Verb::Start, Processing { process_id }, None)
    }
}
