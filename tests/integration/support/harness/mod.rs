//! The concurrency harness: random schedules of workers running transitions
//! against the real server, every outcome recorded client-side, and one check
//! after each case of everything the database must then hold.
//!
//! The same harness runs the crate's write path ([`CrateWriter`]) and the
//! legacy two-write pattern ([`LegacyWriter`](super::legacy_writer::LegacyWriter)):
//! the first must always pass the check, the second must be caught.
//!
//! Replaying: a failing property prints its seed; `PROPTEST_RNG_SEED=<seed>`
//! regenerates the same schedules (the interleaving of the workers is up to
//! the machine, so a race may need a few runs to show again).
//! `MACHINE_STATE_PROPTEST_CASES=<n>` scales every property up for a soak run.

mod check;
mod properties;
mod run;
mod schedule;
mod writers;

pub(crate) use check::*;
pub(crate) use properties::*;
pub(crate) use run::*;
pub(crate) use schedule::*;
pub(crate) use writers::*;

/// The most workers a schedule has; each holds one pool connection.
pub(crate) const MAX_WORKERS: usize = 8;

/// The environment variable that sets the number of cases of every property.
pub(crate) const CASES_VAR: &str = "MACHINE_STATE_PROPTEST_CASES";
