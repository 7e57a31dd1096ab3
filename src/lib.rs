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
//! - **The call sites.** [`RecipeRun`] is what the legacy starter, executor and
//!   stopper did, fenced by the process id, and [`transaction()`] commits the
//!   caller's own writes (its `process_executions` row) with the transitions.
//! - **The database side.** The migrations keep working SQL functions under the
//!   legacy names for non-Rust callers; [`WritePath::SqlFunction`] runs the
//!   crate through them for a role that may not write the tables;
//!   [`audit::audit`] and [`audit::repair`] bring a legacy database to 0%
//!   divergence. [`migrations::run_migrations_with`] applies the migrations
//!   on a live database: each migration
//!   waits at most a short lock timeout for any lock, retried within a budget
//!   ([`MigrationOptions`]), so writers never queue behind it for long.
//!
//! Library functions take a diesel [`PgConnection`](diesel::PgConnection);
//! [`pool()`] builds an r2d2 pool whose sessions need a single round trip per
//! transition. With the `embedded` feature, `EmbeddedPostgres` starts a
//! private server from the PostgreSQL binaries on the machine, for
//! development and tests.
//!
//! # Where things are
//!
//! The root holds the core: the typed machines ([`Machine`], its markers,
//! [`AnyMachine`]), the errors, [`RecipeRun`], [`transaction()`],
//! [`pool()`]/[`connect`], [`run_migrations`], [`WritePath`] and
//! [`RetryPolicy`], the states and the transition table. The rest is in
//! topical modules: [`audit`] (divergence, repair, stuck machines),
//! [`history`] (reading and pruning the history), [`doctor`] (who can reach
//! the tables, and the fixes), [`migrations`] (on a live database; the
//! export for the Supabase CLI), [`pool`](mod@pool) (the r2d2 manager and its modes),
//! [`telemetry`] (the metrics and the span), and with features `embedded`
//! and `testing` a private server and the kit for tests.
//!
//! # Features
//!
//! None is on by default: the default build is the domain library alone,
//! on diesel, r2d2, diesel_migrations, thiserror, strum, uuid, chrono,
//! tracing and metrics. `testing` adds `machine_state::testing`, what a
//! service's own tests need (in its dev-dependencies); `serde` derives
//! `Serialize` for the report and history types; `embedded` adds
//! `EmbeddedPostgres`. The `machine-state` command is a package of its own
//! (`cli/` in the repository), on this library's public API only.
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
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![expect(
    clippy::result_large_err,
    reason = "a refused transition hands the machine back by value, as the API promises; \
              moving it costs nothing next to the database round trip"
)]

mod application_role;
pub mod audit;
mod blockers;
mod connection;
pub mod doctor;
#[cfg(feature = "embedded")]
pub mod embedded;
mod error;
pub mod history;
mod lock;
mod machine;
pub mod migrations;
mod pair;
pub mod pool;
mod recipe;
mod retention;
mod retry;
mod sql_file;
/// The diesel schema of the three tables (as `diesel print-schema` writes
/// it, each table and column documented by its `COMMENT ON`), with the
/// `testing` feature: for tests and benches that query the tables directly.
/// Read through it; write only through the transitions.
#[cfg(feature = "testing")]
#[rustfmt::skip]
pub mod schema;
#[cfg(not(feature = "testing"))]
#[rustfmt::skip]
mod schema;
mod state;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
mod transaction;
mod write;

/// The diesel this crate is built on (2.4): its `PgConnection` is the
/// argument of every call. Use it as `machine_state::diesel` to be sure of
/// the same major version.
pub use diesel;
/// The uuid crate of the ids in the API (machine, process and operation ids).
pub use uuid;

pub use error::{Error, TransitionError};
pub use history::{HistoryEntry, find_operation, new_operation_id};
pub use lock::{Blocker, DEFAULT_LOCK_TIMEOUT};
pub use machine::{
    Action, AnyMachine, Errored, Idle, InitialState, MAX_DESCRIPTION_CHARS, Machine, MachineState,
    Offline, Processing, Transition, validate_description,
};
pub use migrations::{
    MigrationOptions, revert_all_migrations, revert_last_migration, run_migrations,
};
pub use pool::{Pool, PooledConnection, connect, pool};
pub use recipe::{RecipeRun, RecipeRunOn};
pub use retry::RetryPolicy;
pub use state::{Edge, State, Status, StoredState, TRANSITIONS, Verb};
pub use transaction::transaction;
pub use write::WritePath;

#[cfg(feature = "embedded")]
pub use embedded::EmbeddedPostgres;
