//! Retention of the transition history, which otherwise grows forever (a plant
//! of 1000 machines writes tens of millions of rows a year).
//!
//! [`prune_history`] deletes entries older than a window, in batches of
//! autocommit statements (short locks, no long transaction holding back
//! vacuum), oldest first, and never a machine's latest entry: the history of
//! every machine stays one unbroken chain that ends in its current state (I6),
//! only shorter.
//!
//! **At most once holds inside the window.** The operation id of a pruned
//! entry is forgotten: an operation retried after its entry was pruned is
//! applied again if its transition is still legal. Operations younger than
//! the window (every retry of an unknown outcome happens within seconds or
//! minutes) keep their guarantee; the window cannot be shorter than
//! [`MIN_RETENTION`].

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Double};

use crate::error::Error;

/// The shortest retention window [`prune_history`] accepts: one day.
pub const MIN_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// How many entries one batch deletes at most, by default.
pub const DEFAULT_BATCH: u32 = 10_000;

#[derive(QueryableByName)]
struct Deleted {
    #[diesel(sql_type = BigInt)]
    deleted: i64,
}

/// Delete the history entries older than `older_than`, except each machine's
/// latest one, in batches of at most `batch` entries (each its own
/// statement); returns how many were deleted.
///
/// Run it as the owner of the tables (no other role may delete history), on a
/// schedule (e.g. daily); a large first run can be spread out by calling it
/// with decreasing windows.
///
/// # Errors
///
/// [`Error::InvalidInput`] (nothing deleted) when `older_than` is shorter
/// than [`MIN_RETENTION`] or `batch` is 0; [`Error::NotMigrated`] and
/// database errors otherwise (what earlier batches deleted stays deleted).
pub fn prune_history(
    conn: &mut PgConnection,
    older_than: Duration,
    batch: u32,
) -> Result<u64, Error> {
    if older_than < MIN_RETENTION {
        return Err(Error::InvalidInput(format!(
            "the retention window must be at least {} hours, got {} s: a retry inside it \
             must still find its operation id",
            MIN_RETENTION.as_secs() / 3600,
            older_than.as_secs()
        )));
    }
    if batch == 0 {
        return Err(Error::InvalidInput(
            "a batch must delete at least one entry".into(),
        ));
    }
    let mut total = 0;
    loop {
        let deleted = sql_query(include_str!("prune.sql"))
            .bind::<Double, _>(older_than.as_secs_f64())
            .bind::<BigInt, _>(i64::from(batch))
            .get_result::<Deleted>(conn)
            .map_err(|error| crate::connection::mark_broken_if_gone(conn, error))
            .map_err(crate::migrations::explain_missing_tables)?
            .deleted;
        total += u64::try_from(deleted).unwrap_or(0);
        if deleted < i64::from(batch) {
            return Ok(total);
        }
    }
}
