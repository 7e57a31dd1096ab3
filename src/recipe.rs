//! The three call sites of the legacy system — starter, executor, stopper —
//! as one small API around a recipe run.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::PgConnection;
use uuid::Uuid;

use crate::error::Error;
use crate::machine::{Errored, Idle, Machine, Offline, Processing};
use crate::retry::RetryPolicy;
use crate::state::State;
use crate::write::{Settings, WritePath};

/// A recipe run on a machine, as the starter, executor and stopper know it.
///
/// The process id is a **fencing token**: `complete`, `fail` and `stop` apply
/// only while the machine still runs this process, so a late call from an
/// older run can never close a newer one (it is refused with
/// [`Error::Conflict`] naming the process the machine runs now).
///
/// Every call takes an operation id. Calling again with the same operation id
/// (after a timeout or an [`Error::OutcomeUnknown`], say) writes nothing and
/// reports the original outcome.
///
/// None of these loads the machine first: the guarded write checks the claim,
/// in one round trip on a [`crate::pool()`] connection. Inside
/// [`crate::transaction`] they join the caller's transaction, so the caller's
/// own writes commit with them.
///
/// Built in two named steps, so that the two ids cannot be swapped by
/// accident: `RecipeRun::on(machine_id).run(process_id)`. It takes the same
/// knobs as [`Machine`]: [`with_retry_policy`](Self::with_retry_policy),
/// [`with_write_path`](Self::with_write_path),
/// [`with_lock_timeout`](Self::with_lock_timeout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RecipeRun {
    /// The machine the recipe runs on.
    pub machine_id: Uuid,
    /// The run.
    pub process_id: Uuid,
    #[cfg_attr(feature = "serde", serde(skip))]
    settings: Settings,
}

/// The first step of a [`RecipeRun`]: the machine, not yet the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecipeRunOn {
    machine_id: Uuid,
}

impl RecipeRunOn {
    /// The run `process_id` (the `process_executions` row's id) on this
    /// machine.
    pub fn run(self, process_id: Uuid) -> RecipeRun {
        RecipeRun {
            machine_id: self.machine_id,
            process_id,
            settings: Settings::default(),
        }
    }
}

impl RecipeRun {
    /// A run on the machine `machine_id`; name the run with
    /// [`RecipeRunOn::run`].
    pub fn on(machine_id: Uuid) -> RecipeRunOn {
        RecipeRunOn { machine_id }
    }

    /// Use `policy` for this run's transitions (defaults to
    /// [`RetryPolicy::default`]), as [`Machine::with_retry_policy`].
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.settings.retry = policy;
        self
    }

    /// Use `path` for this run's transitions (defaults to
    /// [`WritePath::Statement`]), as [`Machine::with_write_path`].
    pub fn with_write_path(mut self, path: WritePath) -> Self {
        self.settings.write_path = path;
        self
    }

    /// Wait at most `limit` for another session's row lock (defaults to
    /// [`DEFAULT_LOCK_TIMEOUT`](crate::DEFAULT_LOCK_TIMEOUT), 5 s), as
    /// [`Machine::with_lock_timeout`].
    pub fn with_lock_timeout(mut self, limit: Duration) -> Self {
        self.settings.lock_timeout = limit;
        self
    }

    /// The starter: `idle` (or `offline`) `-> processing` with this run.
    ///
    /// Of two starters racing on one machine exactly one wins; the other gets
    /// [`Error::Conflict`] whose `found` names the winner's process id.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] when the machine is neither idle nor offline;
    /// [`Error::ProcessInUse`] when this run already runs on another machine;
    /// [`Error::NotFound`], [`Error::Inconsistent`], database errors.
    pub fn start(
        &self,
        conn: &mut PgConnection,
        operation_id: Uuid,
    ) -> Result<Machine<Processing>, Error> {
        let from_idle = self
            .claim_as(Idle)
            .with_operation_id(operation_id)
            .start(conn, self.process_id);
        match from_idle {
            Ok(machine) => Ok(machine),
            // Offline machines may be started too; a repeat of a start that
            // began offline is recorded with `from = offline`.
            Err(refused) if refused_as_offline(&refused.error) => Ok(self
                .claim_as(Offline)
                .with_operation_id(operation_id)
                .start(conn, self.process_id)?),
            Err(refused) => Err(refused.error),
        }
    }

    /// The executor: the recipe finished, `processing -> idle`.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] when the machine no longer runs this process;
    /// [`Error::NotFound`], [`Error::Inconsistent`], database errors.
    pub fn complete(
        &self,
        conn: &mut PgConnection,
        operation_id: Uuid,
    ) -> Result<Machine<Idle>, Error> {
        Ok(self
            .claim()
            .with_operation_id(operation_id)
            .complete(conn)?)
    }

    /// The executor: the recipe failed, `processing -> error`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an empty, NUL-containing or overlong
    /// message; otherwise as [`complete`](Self::complete).
    pub fn fail(
        &self,
        conn: &mut PgConnection,
        message: &str,
        operation_id: Uuid,
    ) -> Result<Machine<Errored>, Error> {
        Ok(self
            .claim()
            .with_operation_id(operation_id)
            .fail(conn, message)?)
    }

    /// The stopper: a user aborted the recipe, `processing -> idle`.
    ///
    /// # Errors
    ///
    /// As [`complete`](Self::complete).
    pub fn stop(
        &self,
        conn: &mut PgConnection,
        operation_id: Uuid,
    ) -> Result<Machine<Idle>, Error> {
        Ok(self.claim().with_operation_id(operation_id).stop(conn)?)
    }

    fn claim(&self) -> Machine<Processing> {
        self.claim_as(Processing {
            process_id: self.process_id,
        })
    }

    /// A typed machine built from what the caller claims, not from a load:
    /// the guarded write verifies the claim. Its `since` is never shown to
    /// anyone: only the machine a successful transition returns leaves this
    /// module.
    fn claim_as<S: crate::MachineState>(&self, state: S) -> Machine<S> {
        Machine::from_parts(self.machine_id, state, DateTime::<Utc>::UNIX_EPOCH)
            .with_settings(self.settings)
    }
}

fn refused_as_offline(error: &Error) -> bool {
    match error {
        Error::Conflict { found, .. } => found.state == State::Offline,
        Error::OperationReused(_) => true,
        _ => false,
    }
}
