//! Schedules: what the workers do, as proptest generates it.

use std::fmt;

use machine_state::{Action, State};
use proptest::collection::vec;
use proptest::prelude::*;
use uuid::Uuid;

use super::*;

/// One thing a worker does, as generated.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Re-read the machine through `AnyMachine::load` (refreshes the worker's
    /// copy; every other op acts on the copy, which may be stale).
    Load,
    /// `bring_online`.
    BringOnline,
    /// `take_offline`.
    TakeOffline,
    /// `start` with a fresh process id.
    Start,
    /// `complete`.
    Complete,
    /// `stop`.
    Stop,
    /// `fail` with this description (blank ones are refused as invalid).
    Fail(String),
    /// `reset`.
    Reset,
}

impl Op {
    /// The action this op runs (a fresh process id for `Start`); `None` for a
    /// load.
    pub(super) fn action(&self) -> Option<Action> {
        Some(match self {
            Op::Load => return None,
            Op::BringOnline => Action::BringOnline,
            Op::TakeOffline => Action::TakeOffline,
            Op::Start => Action::Start(Uuid::new_v4()),
            Op::Complete => Action::Complete,
            Op::Stop => Action::Stop,
            Op::Fail(description) => Action::Fail(description.clone()),
            Op::Reset => Action::Reset,
        })
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Load => f.write_str("load"),
            Op::BringOnline => f.write_str("bring_online"),
            Op::TakeOffline => f.write_str("take_offline"),
            Op::Start => f.write_str("start"),
            Op::Complete => f.write_str("complete"),
            Op::Stop => f.write_str("stop"),
            Op::Fail(description) => write!(f, "fail({description:?})"),
            Op::Reset => f.write_str("reset"),
        }
    }
}

/// One step of a worker: an op on machine number `machine`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Step {
    /// Index into [`Schedule::initial`].
    pub(crate) machine: usize,
    /// What to do.
    pub(crate) op: Op,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{} {:?}", self.machine, self.op)
    }
}

/// The session the workers' pool connections default to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Session {
    /// The crate's pool: REPEATABLE READ by default, a transition is one
    /// autocommit statement.
    RepeatableRead,
    /// A plain r2d2 pool: READ COMMITTED by default, so the write path falls
    /// back to an explicit `BEGIN ISOLATION LEVEL REPEATABLE READ`.
    ReadCommitted,
}

/// A generated case: machines in their initial states, and what each worker
/// does, all workers released together.
#[derive(Clone)]
pub(crate) struct Schedule {
    /// Which kind of pool the workers take their connections from.
    pub(crate) session: Session,
    /// The state each machine starts in.
    pub(crate) initial: Vec<State>,
    /// The steps of each worker.
    pub(crate) workers: Vec<Vec<Step>>,
}

impl Schedule {
    pub(super) fn ops(&self) -> usize {
        self.workers.iter().map(Vec::len).sum()
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Schedule ({:?} sessions, {} machines {:?}, {} workers, {} ops):",
            self.session,
            self.initial.len(),
            self.initial,
            self.workers.len(),
            self.ops()
        )?;
        for (worker, steps) in self.workers.iter().enumerate() {
            writeln!(f, "  worker {worker}: {steps:?}")?;
        }
        Ok(())
    }
}

/// Any op, weighted so that most of them are legal from some state and
/// every transition of the table is exercised.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Load),
        2 => Just(Op::BringOnline),
        2 => Just(Op::TakeOffline),
        3 => Just(Op::Start),
        3 => Just(Op::Complete),
        2 => Just(Op::Stop),
        2 => "[a-z]{1,8}( [a-z]{1,8})?".prop_map(Op::Fail),
        1 => Just(Op::Fail("  ".into())),
        2 => Just(Op::Reset),
    ]
}

fn initial_state() -> impl Strategy<Value = State> {
    prop_oneof![
        Just(State::Offline),
        Just(State::Idle),
        Just(State::Processing),
        Just(State::Errored),
    ]
}

/// `workers` workers (2–8 by default) with 1–12 steps each over `machines`
/// machines (1–8), machine 0 being the hottest, so most cases contend.
pub(crate) fn schedules_with(
    machines: std::ops::RangeInclusive<usize>,
    workers: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = Schedule> {
    (machines, workers)
        .prop_flat_map(|(machines, workers)| {
            let machine = prop_oneof![2 => Just(0), 3 => 0..machines];
            let step = (machine, op()).prop_map(|(machine, op)| Step { machine, op });
            let session = prop_oneof![Just(Session::RepeatableRead), Just(Session::ReadCommitted)];
            (
                session,
                vec(initial_state(), machines),
                vec(vec(step, 1..=24), workers),
            )
        })
        .prop_map(|(session, initial, workers)| Schedule {
            session,
            initial,
            workers,
        })
}

/// The default schedules: 1–8 machines, 2–8 workers.
pub(crate) fn schedules() -> impl Strategy<Value = Schedule> {
    schedules_with(1..=8, 2..=MAX_WORKERS)
}
