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
//! Both are safe while the machines run: every wait for the history's locks
//! is limited and retried within a budget ([`prune_history_with`]), in the
//! SQL functions themselves (migration `2026-12-05-500000`), so a scheduled
//! call gets it too.
//!
//! **At most once holds inside the window.** The operation id of a pruned
//! entry is forgotten: an operation retried after its entry was pruned is
//! applied again if its transition is still legal. Operations younger than
//! the window (every retry of an unknown outcome happens within seconds or
//! minutes) keep their guarantee; the window cannot be shorter than
//! [`MIN_RETENTION`].

use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Double, Integer, Text};

use crate::error::Error;
use crate::migrations::MigrationOptions;

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
/// returns how many were removed. One transaction, waiting for the history's
/// locks as patiently as [`MigrationOptions::default`] (see
/// [`prune_history_with`]).
///
/// Run it as the owner of the tables (no other role may remove history), on a
/// schedule (e.g. daily).
///
/// # Errors
///
/// [`Error::InvalidInput`] (nothing deleted) when `older_than` is shorter
/// than [`MIN_RETENTION`] or `batch` is 0, or when called inside a
/// transaction (it runs in one of its own); [`Error::Blocked`] (nothing
/// deleted) when other sessions held the history past the budget;
/// [`Error::NotMigrated`] and database errors otherwise.
pub fn prune_history(
    conn: &mut PgConnection,
    older_than: Duration,
    batch: u32,
) -> Result<u64, Error> {
    prune_history_with(conn, older_than, batch, &MigrationOptions::default())
}

/// [`prune_history`], waiting for the history's locks as `options` say.
///
/// Detaching a partition takes an ACCESS EXCLUSIVE lock on the history, and
/// PostgreSQL queues every later transition behind a lock request that
/// waits (for a report reading the history, say, or a session left idle in
/// a transaction). So every lock wait of the run is limited to
/// `options.lock_timeout()`; a wait that times out rolls that step back (its
/// locks released: the transitions queued behind it go on) and it is tried
/// again after a jittered pause, until `options.budget()` is spent. The
/// detaches come last, after every read and delete of many rows, so the
/// history is held exclusively only for catalog changes and at most one
/// entry per machine. A transition stalls at most about the lock timeout.
///
/// # Errors
///
/// As [`prune_history`].
pub fn prune_history_with(
    conn: &mut PgConnection,
    older_than: Duration,
    batch: u32,
    options: &MigrationOptions,
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
    let deleted = guarded(conn, options, "pruning the history", |conn| {
        sql_query(include_str!("prune.sql"))
            .bind::<Double, _>(older_than.as_secs_f64())
            .bind::<Integer, _>(batch)
            .get_result::<Deleted>(conn)
    })?
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
/// cost a row-by-row delete at retention. Waits for the history's locks as
/// patiently as [`MigrationOptions::default`] (see [`prepare_history_with`]).
///
/// # Errors
///
/// [`Error::InvalidInput`] when `days_ahead` is over 366 or when called
/// inside a transaction (it runs in one of its own);
/// [`Error::Blocked`] (nothing created) when other sessions held the
/// history past the budget; [`Error::NotMigrated`] and database errors
/// otherwise.
pub fn prepare_history(conn: &mut PgConnection, days_ahead: u32) -> Result<Vec<String>, Error> {
    prepare_history_with(conn, days_ahead, &MigrationOptions::default())
}

/// [`prepare_history`], waiting for the history's locks as `options` say:
/// attaching a partition holds the default partition exclusively while it is
/// checked for entries of the new day, so every lock wait is limited and
/// retried as in [`prune_history_with`].
///
/// # Errors
///
/// As [`prepare_history`].
pub fn prepare_history_with(
    conn: &mut PgConnection,
    days_ahead: u32,
    options: &MigrationOptions,
) -> Result<Vec<String>, Error> {
    let days = i32::try_from(days_ahead)
        .ok()
        .filter(|days| *days <= 366)
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "partitions can be prepared at most 366 days ahead, got {days_ahead}"
            ))
        })?;
    Ok(guarded(
        conn,
        options,
        "preparing the history's partitions",
        |conn| {
            sql_query(include_str!("prepare.sql"))
                .bind::<Integer, _>(days)
                .load::<Prepared>(conn)
        },
    )?
    .into_iter()
    .map(|prepared| prepared.partition)
    .collect())
}

/// Run `call` (one of the SQL functions) in a READ COMMITTED transaction of
/// its own (its steps lock the rows they find as they find them, whatever
/// the connection's default isolation) whose `machine_state.ddl_lock_timeout`
/// and `machine_state.ddl_budget` are the options'. Refused inside the
/// caller's transaction, which would hold the history's locks (exclusive,
/// after a detach) until it ends. A spent budget (SQLSTATE 55P03) is
/// [`Error::Blocked`], naming the sessions that held the history.
fn guarded<T>(
    conn: &mut PgConnection,
    options: &MigrationOptions,
    operation: &'static str,
    call: impl FnOnce(&mut PgConnection) -> QueryResult<T>,
) -> Result<T, Error> {
    let started = Instant::now();
    let body = |conn: &mut PgConnection| {
        sql_query(include_str!("ddl_options.sql"))
            .bind::<Text, _>(crate::lock::setting(options.lock_timeout()))
            .bind::<Text, _>(crate::lock::setting(options.budget()))
            .execute(conn)?;
        call(conn)
    };
    if crate::connection::in_transaction(conn) {
        return Err(Error::InvalidInput(format!(
            "{operation} runs in a transaction of its own: call it outside a transaction \
             (inside one, the history's locks would be held until it ends)"
        )));
    }
    let result = conn.build_transaction().read_committed().run(body);
    result.map_err(|error| {
        if crate::lock::timed_out(&error) {
            return Error::Blocked {
                operation,
                waited: started.elapsed(),
                blockers: crate::blockers::find(conn, options.lock_timeout()),
            };
        }
        crate::migrations::explain_missing_tables(crate::connection::mark_broken_if_gone(
            conn, error,
        ))
    })
}
