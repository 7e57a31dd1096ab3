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
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[strum(serialize_all = "lowercase")]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum State {
    /// Powered down or disconnected; can be brought online or started directly.
    Offline,
    /// Online and waiting for a recipe.
    Idle,
    /// Running a recipe; always carries the process id of that run.
    Processing,
    /// Stopped by a failure; always carries a failure description. Stored as
    /// `error`; named as the typed marker [`Errored`](crate::Errored) and
    /// [`AnyMachine::Errored`](crate::AnyMachine::Errored) are.
    #[strum(serialize = "error")]
    #[cfg_attr(feature = "serde", serde(rename = "error"))]
    Errored,
}

impl State {
    /// The stored string, e.g. `"processing"`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether the domain allows a transition from `self` to `to`
    /// (by any [`Verb`]): an entry of [`TRANSITIONS`].
    pub fn can_become(self, to: State) -> bool {
        TRANSITIONS.iter().any(|t| t.from == self && t.to == to)
    }

    /// The transitions that leave `self`, in table order.
    pub fn transitions(self) -> impl Iterator<Item = &'static Edge> {
        TRANSITIONS.iter().filter(move |t| t.from == self)
    }
}

/// The transitions by name: the methods of the typed machines, without their
/// arguments.
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
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[strum(serialize_all = "snake_case")]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Verb {
    /// `bring_online`: the machine is put in service.
    BringOnline,
    /// `take_offline`: the machine is taken out of service.
    TakeOffline,
    /// `start(process_id)`: a recipe run starts.
    Start,
    /// `complete`: the recipe run finished.
    Complete,
    /// `stop`: the recipe run was aborted by a user.
    Stop,
    /// `fail(description)`: the recipe run failed.
    Fail,
    /// `reset`: the failure was dealt with.
    Reset,
}

impl Verb {
    /// The name as the history records it (`machine_state_transitions.verb`),
    /// e.g. `"take_offline"`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The state this transition leads to, whichever state it leaves.
    pub fn target(self) -> State {
        // Every verb has one target: the first entry names it.
        TRANSITIONS
            .iter()
            .find(|t| t.verb == self)
            .map_or(State::Idle, |t| t.to)
    }

    /// The states this transition leaves from, in table order.
    pub fn sources(self) -> impl Iterator<Item = State> {
        TRANSITIONS
            .iter()
            .filter(move |t| t.verb == self)
            .map(|t| t.from)
    }
}

/// One legal transition: an entry of [`TRANSITIONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Edge {
    /// The state it leaves.
    pub from: State,
    /// Its name: the method of `Machine<from>`.
    pub verb: Verb,
    /// The state it leads to.
    pub to: State,
}

/// **The transition table**: every legal transition, and only those.
///
/// The one source of the rule at run time: [`State::can_become`],
/// [`AnyMachine::perform`](crate::AnyMachine::perform) and the command line's
/// messages read it. Two mirrors are unavoidable and pinned by tests (see
/// `ARCHITECTURE.md`): the typed methods of [`Machine`](crate::Machine)
/// (compile time) and the `legal` list of the SQL function
/// `machine_state_transition`.
pub const TRANSITIONS: [Edge; 9] = {
    use State::{Errored, Idle, Offline, Processing};
    const fn edge(from: State, verb: Verb, to: State) -> Edge {
        Edge { from, verb, to }
    }
    [
        edge(Offline, Verb::BringOnline, Idle),
        edge(Offline, Verb::Start, Processing),
        edge(Idle, Verb::TakeOffline, Offline),
        edge(Idle, Verb::Start, Processing),
        edge(Processing, Verb::Complete, Idle),
        edge(Processing, Verb::Stop, Idle),
        edge(Processing, Verb::Fail, Errored),
        edge(Errored, Verb::Reset, Idle),
        edge(Errored, Verb::TakeOffline, Offline),
    ]
};

#[cfg(test)]
mod tests {
    use strum::IntoEnumIterator;

    use super::*;

    #[test]
    fn the_errored_state_is_stored_as_error() {
        assert_eq!(State::Errored.as_str(), "error");
        assert_eq!("error".parse::<State>(), Ok(State::Errored));
        assert_eq!(StoredState::parse("error"), State::Errored);
        assert_eq!(StoredState::parse("running").known(), None);
    }

    #[test]
    fn every_verb_has_one_target_and_at_least_one_source() {
        for verb in Verb::iter() {
            let targets: Vec<State> = TRANSITIONS
                .iter()
                .filter(|t| t.verb == verb)
                .map(|t| t.to)
                .collect();
            assert!(!targets.is_empty(), "{verb} has no entry");
            assert!(
                targets.iter().all(|&t| t == verb.target()),
                "{verb}: {targets:?}"
            );
        }
    }

    #[test]
    fn no_state_has_two_verbs_to_the_same_place_except_complete_and_stop() {
        for from in State::iter() {
            for to in State::iter() {
                let verbs: Vec<Verb> = from
                    .transitions()
                    .filter(|t| t.to == to)
                    .map(|t| t.verb)
                    .collect();
                assert!(
                    verbs.len() <= 1 || verbs == [Verb::Complete, Verb::Stop],
                    "{from} -> {to}: {verbs:?}"
                );
            }
        }
    }
}

/// A state as a row holds it: one of the four [`State`]s, or a string this
/// crate does not know (the legacy system wrote `running` and upper-case
/// `IDLE`). Compares equal to the [`State`] it holds, so
/// `status.state == State::Processing` reads as it should.
#[derive(Clone, Debug, PartialEq, Eq, Hash, diesel::deserialize::FromSqlRow)]
pub enum StoredState {
    /// One of the four states.
    Known(State),
    /// A string that is none of them, as stored.
    Unknown(Box<str>),
}

impl StoredState {
    /// The state a stored string names, or [`StoredState::Unknown`].
    pub fn parse(stored: &str) -> StoredState {
        stored
            .parse()
            .map_or_else(|_| StoredState::Unknown(stored.into()), StoredState::Known)
    }

    /// The stored string.
    pub fn as_str(&self) -> &str {
        match self {
            StoredState::Known(state) => state.as_str(),
            StoredState::Unknown(stored) => stored,
        }
    }

    /// The state, when it is one of the four.
    pub fn known(&self) -> Option<State> {
        match self {
            StoredState::Known(state) => Some(*state),
            StoredState::Unknown(_) => None,
        }
    }
}

impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for StoredState {
    fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        let stored = <String as diesel::deserialize::FromSql<
            diesel::sql_types::Text,
            diesel::pg::Pg,
        >>::from_sql(bytes)?;
        Ok(StoredState::parse(&stored))
    }
}

impl From<State> for StoredState {
    fn from(state: State) -> Self {
        StoredState::Known(state)
    }
}

impl PartialEq<State> for StoredState {
    fn eq(&self, other: &State) -> bool {
        self.known() == Some(*other)
    }
}

impl PartialEq<str> for StoredState {
    /// The stored string is `other`.
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for StoredState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for StoredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for StoredState {
    /// As the stored string.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A state together with the process it runs, as found in (or expected of) a
/// row: the unit a guarded write compares.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Status {
    /// The state as stored; not necessarily one of [`State`]'s.
    pub state: StoredState,
    /// The process id stored beside it.
    pub process_id: Option<Uuid>,
}

impl Status {
    /// A status made of a known state and its process id.
    pub fn new(state: State, process_id: Option<Uuid>) -> Self {
        Status {
            state: StoredState::Known(state),
            process_id,
        }
    }

    /// A status as a row stores it (`state` parsed with
    /// [`StoredState::parse`]).
    pub fn stored(state: &str, process_id: Option<Uuid>) -> Self {
        Status {
            state: StoredState::parse(state),
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
