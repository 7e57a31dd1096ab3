//! Retention of the transition history, which otherwise grows forever (a plant
//! of 1000 machines writes tens of millions of rows a year).
//!
//! The history is partitioned by operation id, one partition per UTC day of
//! UUIDv7 ids (migration `2026-12-05-300000`). [`prune_history`] detaches and
//! drops the daily partitions wholly older than a window (no row is deleted
//! one by one: seconds and next to no WAL for millions of entries), after
//! putting each machine's latest entry among them back into the default
//! partition, so the history of every machine stays one unbroken chain that
//! ends in its current state (I6), only shorter. Entries of the default
//! partition (written before the partitioning, or with ids outside the daily
//! ranges) are deleted in batches. [`prepare_history`] creates the coming
//! days' partitions ahead: schedule both daily (`pg_cron` can call the SQL
//! functions `machine_state_prepare_history()` and
//! `machine_state_prune_history(interval)` directly); a write never fails for
//! want of a partition, it lands in the default one.
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
use diesel::sql_types::{BigInt, Double, Integer, Text};

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

/// Remove the history entries older than `older_than`, except each machine's
/// latest one: the daily partitions wholly older than the window are dropped,
/// the default partition's entries deleted in batches of at most `batch`;
/// returns how many were removed. One transaction.
///
/// Run it as the owner of the tables (no other role may remove history), on a
/// schedule (e.g. daily).
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
    let batch = i32::try_from(batch).map_err(|_| {
        Error::InvalidInput(format!("a batch must be at most {} entries", i32::MAX))
    })?;
    let deleted = sql_query(include_str!("prune.sql"))
        .bind::<Double, _>(older_than.as_secs_f64())
        .bind::<Integer, _>(batch)
        .get_result::<Deleted>(conn)
        .map_err(|error| crate::connection::mark_broken_if_gone(conn, error))
        .map_err(crate::migrations::explain_missing_tables)?
        .deleted;
    Ok(u64::try_from(deleted).unwrap_or(0))
}

#[derive(QueryableByName)]
struct Prepared {
    #[diesel(sql_type = Text)]
    partition: String,
}

/// Create the history's daily partitions from today (UTC) to `days_ahead`
/// days after it, those missing; returns the names of those created. Run it
/// as the owner of the tables, daily, with a margin (the default of
/// `machine_state_prepare_history` is 7 days): a transition on a day without
/// its partition still succeeds, in the default partition, whose entries
/// cost a row-by-row delete at retention.
///
/// # Errors
///
/// [`Error::InvalidInput`] when `days_ahead` is over 366;
/// [`Error::NotMigrated`] and database errors otherwise.
pub fn prepare_history(conn: &mut PgConnection, days_ahead: u32) -> Result<Vec<String>, Error> {
    let days = i32::try_from(days_ahead)
        .ok()
        .filter(|days| *days <= 366)
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "partitions can be prepared at most 366 days ahead, got {days_ahead}"
            ))
        })?;
    Ok(sql_query(include_str!("prepare.sql"))
        .bind::<Integer, _>(days)
        .load::<Prepared>(conn)
        .map_err(|error| crate::connection::mark_broken_if_gone(conn, error))
        .map_err(crate::migrations::explain_missing_tables)?
        .into_iter()
        .map(|prepared| prepared.partition)
        .collect())
}
