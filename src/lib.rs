//! Move industrial machines through their states, and never let the two
//! PostgreSQL tables that describe a machine disagree.
//!
//! # Why it is shaped like this
//!
//! A machine is described by two rows: `machines.status` and
//! `machine_state.current_state` (with the process it runs, its failure mode
//! and timestamps). The legacy system wrote them with two separate writes; under
//! concurrency and crashes most machines ended up with the two diverged. This
//! crate makes a diverged pair impossible to write:
//!
//! - **Only legal transitions compile.** A [`Machine<S>`] carries its state in
//!   its type ([`Offline`], [`Idle`], [`Processing`], [`Errored`]); each
//!   transition is a method of the source state's type only, and consumes the
//!   machine. Rows loaded at run time become typed machines through
//!   [`AnyMachine`], which refuses a pair that disagrees
//!   ([`Error::Inconsistent`]) rather than guessing.
//! - **One write path.** Every transition is one REPEATABLE READ transaction
//!   that compare-and-sets *both* rows on the state (and process id) the typed
//!   machine claims and appends a history row
//!   ([`machine_state_transitions`](history)). A stale or concurrent transition
//!   is refused with [`Error::Conflict`] and changes nothing; lost races
//!   (40001, 40P01) are retried with jittered backoff ([`RetryPolicy`]).
//! - **At most once.** Each transition carries a client-generated operation id
//!   (unique in the history), so one whose COMMIT outcome was lost is resolved
//!   by [`find_operation`] or by retrying with the same id.
//!
//! Library functions take a diesel [`PgConnection`](diesel::PgConnection);
//! [`pool`] builds an r2d2 pool whose sessions need a single round trip per
//! transition. [`EmbeddedPostgres`] starts a private server from the
//! PostgreSQL binaries on the machine, for development and tests.
//!
//! # Example
//!
//! ```no_run
//! use machine_state::{AnyMachine, Machine, Offline};
//! use uuid::Uuid;
//!
//! # fn main() -> Result<(), machine_state::Error> {
//! let pool = machine_state::pool("postgresql://localhost/factory")?;
//! let conn = &mut pool.get()?;
//!
//! let machine = Machine::<Offline>::create(conn, Uuid::new_v4())?;
//! let idle = machine.bring_online(conn)?;
//! let running = idle.start(conn, Uuid::new_v4())?;
//! let idle = running.complete(conn)?;
//!
//! // Later, elsewhere: the state is known only at run time.
//! match AnyMachine::load(conn, idle.id())? {
//!     AnyMachine::Idle(machine) => { machine.take_offline(conn)?; }
//!     other => println!("machine is {}", other.state()),
//! }
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
#![expect(
    clippy::result_large_err,
    reason = "a refused transition hands the machine back by value, as the API promises; \
              moving it costs nothing next to the database round trip"
)]

mod audit;
mod embedded;
mod error;
mod history;
mod machine;
mod migrations;
mod pair;
mod pool;
mod recipe;
mod retry;
#[rustfmt::skip]
mod schema;
mod state;
mod transaction;
mod write;

pub use audit::{AuditReport, Finding, Repair, Side, StuckMachine, audit, pairs, repair, stuck};
pub use embedded::{Builder as EmbeddedPostgresBuilder, EmbeddedPostgres};
pub use error::{Error, TransitionError};
pub use history::{HistoryEntry, find_operation, history};
pub use machine::{
    Action, AnyMachine, Errored, Idle, InitialState, MAX_DESCRIPTION_CHARS, Machine, MachineState,
    Offline, Processing, Transition,
};
pub use migrations::{MIGRATIONS, revert_all_migrations, revert_last_migration, run_migrations};
pub use pair::{Pair, StateRow, Violation};
pub use pool::{Pool, PooledConnection, RepeatableReadSession, pool, pool_builder};
pub use recipe::RecipeRun;
pub use retry::RetryPolicy;
pub use state::{State, Status};
pub use transaction::transaction;
pub use write::{WritePath, sql_function_fallbacks};
