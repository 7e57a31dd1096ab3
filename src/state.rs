//! The four states as runtime values, and a state together with its process.

use std::fmt;

use uuid::Uuid;

/// A machine's state as stored in `machines.status` and
/// `machine_state.current_state`.
///
/// The strings are exactly `offline`, `idle`, `processing` and `error`; parsing
/// anything else (a legacy `running`, say) fails instead of guessing.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::Display,
    strum::EnumString,
    strum::AsRefStr,
    strum::IntoStaticStr,
    strum::EnumIter,
    serde::Serialize,
)]
#[strum(serialize_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Powered down or disconnected; can be brought online or started directly.
    Offline,
    /// Online and waiting for a recipe.
    Idle,
    /// Running a recipe; always carries the process id of that run.
    Processing,
    /// Stopped by a failure; always carries a failure description.
    Error,
}

impl State {
    /// The stored string, e.g. `"processing"`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether the domain allows a transition from `self` to `to`.
    ///
    /// This is the transition table of DESIGN.md; the typed [`Machine`] API
    /// enforces it at compile time, this function at run time.
    ///
    /// [`Machine`]: crate::Machine
    pub fn can_become(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Offline, Idle)
                | (Offline, Processing)
                | (Idle, Offline)
                | (Idle, Processing)
                | (Processing, Idle)
                | (Processing, Error)
                | (Error, Offline)
                | (Error, Idle)
        )
    }
}

/// A state together with the process it runs, as found in (or expected of) a
/// row: the unit a guarded write compares.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// The state string as stored; not necessarily one of [`State`]'s.
    pub state: String,
    /// The process id stored beside it.
    pub process_id: Option<Uuid>,
}

impl Status {
    /// A status made of a known state and its process id.
    pub fn new(state: State, process_id: Option<Uuid>) -> Self {
        Status {
            state: state.as_str().to_owned(),
            process_id,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.state)?;
        if let Some(process_id) = self.process_id {
            write!(f, " (process `{process_id}`)")?;
        }
        Ok(())
    }
}
