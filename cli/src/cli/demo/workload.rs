//! What each simulated worker does, in both runs: its role, the work it
//! pauses for, and what one step came to.

use std::thread;
use std::time::{Duration, Instant};

/// The failure description of a failed recipe run.
pub(crate) const FAILURE: &str = "recipe failed: chamber pressure out of range (demo)";

/// What a worker does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Starts recipe runs on offline or idle machines.
    Starter,
    /// Runs the recipe of a processing machine, then completes it (or, one
    /// time in 20, fails it).
    Executor,
    /// Aborts processing machines, and resets machines in error (a user).
    Stopper,
}

impl Role {
    pub(super) const ALL: [Role; 3] = [Role::Starter, Role::Executor, Role::Stopper];
}

/// What one worker step came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The machine was changed.
    Applied,
    /// The machine had moved on since it was read: nothing written.
    Refused,
    /// The machine was in no state this role acts on.
    NothingToDo,
    /// The run's deadline passed during the work: the worker was stopped
    /// there, as a crash or a deploy stops a service wherever it is (for
    /// the legacy writer, between its two writes).
    Interrupted,
}

/// The simulated work of each role: the same pauses in both runs, until
/// the run's deadline.
pub(crate) struct Workload {
    pub(super) deadline: Instant,
}

impl Workload {
    /// Whether the run is over: a worker that finds it so after its work
    /// stops right there, writing nothing more.
    pub(crate) fn stopped(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The work a role does after deciding and before its first write: the
    /// recipe run, for an executor.
    pub(crate) fn before(&self, role: Role) {
        if role == Role::Executor {
            pause(2_000);
        }
    }

    /// The work the legacy components did between their two writes:
    /// dispatching the recipe to the tool, reporting its end, relaying an
    /// abort. This crate does it before its one write.
    pub(crate) fn between(&self, role: Role) {
        match role {
            Role::Starter => pause(1_000),
            Role::Executor => pause(500),
            Role::Stopper => pause(500),
        }
    }

    /// Whether this recipe run fails (one in 20).
    pub(crate) fn recipe_fails(&self) -> bool {
        fastrand::u8(0..20) == 0
    }

    /// A user's pause between two looks at a machine.
    pub(super) fn think(&self, role: Role) {
        if role == Role::Stopper {
            pause(3_000);
        }
    }
}

/// Sleep a random time up to `max_micros`.
fn pause(max_micros: u64) {
    thread::sleep(Duration::from_micros(fastrand::u64(0..=max_micros)));
}
