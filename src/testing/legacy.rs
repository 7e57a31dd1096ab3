//! **The legacy two-write pattern, deliberately broken**: never use it to
//! change a machine. It is here to reproduce, on a real database with real
//! concurrency, the bug this crate exists to fix (`machine-state demo`, the
//! tests that prove the harness catches it, the benchmarks' baseline).
//!
//! The legacy starter, executor and stopper changed a machine with two
//! separate autocommit `UPDATE`s, one per table, each a blind overwrite (no
//! compare-and-set, no fence on the process id), with their own work between
//! the two. The halves are separate functions so that callers put that work
//! (or a crash) between them.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

/// One half: overwrite `machines` (`status`, `current_process_id`,
/// `updated_at`). Returns the number of rows written (0 for an unknown
/// machine: the legacy code checked nothing).
///
/// # Errors
///
/// Database errors.
pub fn write_machines(
    conn: &mut PgConnection,
    machine_id: Uuid,
    state: &str,
    process_id: Option<Uuid>,
    at: DateTime<Utc>,
) -> QueryResult<usize> {
    sql_query(include_str!("legacy_machines.sql"))
        .bind::<SqlUuid, _>(machine_id)
        .bind::<Text, _>(state)
        .bind::<Nullable<SqlUuid>, _>(process_id)
        .bind::<Timestamptz, _>(at)
        .execute(conn)
}

/// The other half: overwrite `machine_state` (state, process, failure mode
/// and description, both timestamps). Returns the number of rows written.
///
/// # Errors
///
/// Database errors.
pub fn write_machine_state(
    conn: &mut PgConnection,
    machine_id: Uuid,
    state: &str,
    process_id: Option<Uuid>,
    description: Option<&str>,
    at: DateTime<Utc>,
) -> QueryResult<usize> {
    sql_query(include_str!("legacy_machine_state.sql"))
        .bind::<SqlUuid, _>(machine_id)
        .bind::<Text, _>(state)
        .bind::<Nullable<SqlUuid>, _>(process_id)
        .bind::<Timestamptz, _>(at)
        .bind::<Nullable<Text>, _>(description)
        .execute(conn)
}
