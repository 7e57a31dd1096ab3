//! Applying and reverting migrations on a live database: each migration
//! waits at most the lock timeout for any one lock, and is tried again, with
//! jittered backoff, until its budget is spent.
//!
//! diesel runs a migration in a transaction of its own (unless its
//! `metadata.toml` says `run_in_transaction = false`); here that transaction
//! is a savepoint inside one that first sets `lock_timeout` locally, so the
//! setting ends with it. A lock wait that times out (SQLSTATE 55P03) or a
//! deadlock (40P01) rolls the whole migration back; anything else stops the
//! run. diesel hands a migration's failure back as a boxed error whose
//! database error cannot be reached, so the SQLSTATE is read from the
//! connection's instrumentation, which sees every failed statement.
//!
//! Only the versions of the given source count: versions in
//! `__diesel_schema_migrations` that are not its own (an application's
//! migrations sharing the table) are neither pending nor reverted.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::migration::{Migration, MigrationConnection, MigrationSource};
use diesel::pg::{Pg, sql_state};
use diesel::prelude::*;
use diesel::result::SqlState;
use diesel::sql_types::{Bool, Text};
use diesel_migrations::MigrationHarness;

use super::MigrationOptions;
use crate::blockers;
use crate::connection::sqlstate;
use crate::error::Error;

/// A boxed migration error, as diesel's harness returns it.
type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Which way a migration goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Apply,
    Revert,
}

/// Apply every migration of `source` not recorded as applied, oldest first.
pub(crate) fn run_pending<S: MigrationSource<Pg>>(
    conn: &mut PgConnection,
    source: &S,
    options: &MigrationOptions,
) -> Result<Vec<String>, Error> {
    with_recorder(conn, |conn, recorder| {
        let bookkept = bookkeeping_exists(conn)?;
        let applied = applied_versions(conn, bookkept)?;
        let mut pending: Vec<_> = migrations(source)?
            .into_iter()
            .filter(|m| !applied.contains(&m.name().version().to_string()))
            .collect();
        pending.sort_by_key(|m| m.name().version().to_string());
        let deadline = Instant::now() + options.budget();
        let mut done = Vec::with_capacity(pending.len());
        let mut setup = !bookkept;
        for migration in &pending {
            step(
                conn,
                recorder,
                migration.as_ref(),
                Direction::Apply,
                options,
                setup,
                deadline,
            )?;
            setup = false;
            done.push(migration.name().version().to_string());
        }
        Ok(done)
    })
}

/// Revert the applied migrations of `source`, newest first, at most `limit`
/// of them.
pub(crate) fn revert<S: MigrationSource<Pg>>(
    conn: &mut PgConnection,
    source: &S,
    options: &MigrationOptions,
    limit: usize,
) -> Result<Vec<String>, Error> {
    with_recorder(conn, |conn, recorder| {
        let bookkept = bookkeeping_exists(conn)?;
        let applied = applied_versions(conn, bookkept)?;
        let mut ours: Vec<_> = migrations(source)?
            .into_iter()
            .filter(|m| applied.contains(&m.name().version().to_string()))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.name().version().to_string()));
        let deadline = Instant::now() + options.budget();
        let mut done = Vec::new();
        for migration in ours.iter().take(limit) {
            step(
                conn,
                recorder,
                migration.as_ref(),
                Direction::Revert,
                options,
                false,
                deadline,
            )?;
            done.push(migration.name().version().to_string());
        }
        Ok(done)
    })
}

/// The migrations of `source`.
fn migrations<S: MigrationSource<Pg>>(source: &S) -> Result<Vec<Box<dyn Migration<Pg>>>, Error> {
    source
        .migrations()
        .map_err(|e| Error::Migration(e.to_string()))
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    exists: bool,
}

/// Whether diesel's bookkeeping table exists (reading it through diesel's
/// harness would create it, outside any migration's transaction).
fn bookkeeping_exists(conn: &mut PgConnection) -> Result<bool, Error> {
    diesel::sql_query(include_str!("bookkeeping_exists.sql"))
        .get_result::<Exists>(conn)
        .map(|row| row.exists)
        .map_err(Error::Database)
}

/// Every version recorded in `__diesel_schema_migrations`, ours or not.
fn applied_versions(conn: &mut PgConnection, bookkept: bool) -> Result<HashSet<String>, Error> {
    if !bookkept {
        return Ok(HashSet::new());
    }
    conn.applied_migrations()
        .map(|versions| versions.iter().map(ToString::to_string).collect())
        .map_err(|e| Error::Migration(e.to_string()))
}

/// The SQLSTATE of the first statement that failed since it was last
/// cleared, as the connection's instrumentation saw it.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Option<SqlState>>>);

impl Recorder {
    fn clear(&self) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = None;
        }
    }

    fn first_failure(&self) -> Option<SqlState> {
        self.0.lock().ok().and_then(|slot| *slot)
    }
}

impl Instrumentation for Recorder {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::FinishQuery {
            error: Some(error), ..
        } = event
            && let Ok(mut slot) = self.0.lock()
            && slot.is_none()
        {
            *slot = sqlstate(error);
        }
    }
}

/// Run `f` with a [`Recorder`] as the connection's instrumentation, then
/// give the connection the default instrumentation back (what a new
/// connection gets).
fn with_recorder<T>(
    conn: &mut PgConnection,
    f: impl FnOnce(&mut PgConnection, &Recorder) -> Result<T, Error>,
) -> Result<T, Error> {
    let recorder = Recorder::default();
    conn.set_instrumentation(recorder.clone());
    let result = f(conn, &recorder);
    match diesel::connection::get_default_instrumentation() {
        Some(default) => conn.set_instrumentation(default),
        None => conn.set_instrumentation(|_: InstrumentationEvent<'_>| {}),
    }
    result
}

/// Apply or revert one migration, attempt after attempt, until it is done,
/// fails for another reason than a lock, or the run's budget is spent (at
/// `deadline`).
fn step(
    conn: &mut PgConnection,
    recorder: &Recorder,
    migration: &dyn Migration<Pg>,
    direction: Direction,
    options: &MigrationOptions,
    setup: bool,
    deadline: Instant,
) -> Result<(), Error> {
    let name = migration.name().to_string();
    let verb = match direction {
        Direction::Apply => "applying",
        Direction::Revert => "reverting",
    };
    let max_attempts = options.max_attempts();
    let started = Instant::now();
    tracing::debug!(migration = %name, "{verb} migration `{name}`");
    let mut attempt = 1;
    loop {
        recorder.clear();
        let Err(AttemptFailure {
            failure,
            left_invalid,
        }) = attempt_once(conn, migration, direction, options, setup, deadline)
        else {
            return Ok(());
        };
        if !left_invalid.is_empty() {
            return Err(Error::Migration(format!(
                "{failure}; the failed attempt left invalid index(es) {}, which could not be \
                 dropped while other sessions held the table: drop them \
                 (`DROP INDEX CONCURRENTLY`) before migrating again",
                left_invalid.join(", ")
            )));
        }
        let state = recorder.first_failure();
        let lock_timeout = state == Some(sql_state::LOCK_NOT_AVAILABLE);
        if !lock_timeout && state != Some(sql_state::T_R_DEADLOCK_DETECTED) {
            return Err(Error::Migration(failure.to_string()));
        }
        let blockers = if lock_timeout {
            blockers::find(conn, options.lock_timeout())
        } else {
            Vec::new()
        };
        let Some(backoff) = options.pause_before_retry(attempt, deadline) else {
            return Err(Error::MigrationBlocked {
                migration: name,
                reverting: direction == Direction::Revert,
                attempts: attempt,
                waited: started.elapsed(),
                blockers,
            });
        };
        let cause = if lock_timeout {
            format!(
                "waited {:?} for a lock held by {}",
                options.lock_timeout(),
                blockers::describe(&blockers)
            )
        } else {
            "was chosen as a deadlock victim".to_owned()
        };
        tracing::info!(
            migration = %name,
            attempt,
            max_attempts,
            "{verb} migration `{name}` {cause}: retry {} of at most {} in {backoff:?}",
            attempt,
            max_attempts - 1
        );
        thread::sleep(backoff);
        attempt += 1;
    }
}

/// Why an attempt failed, and any index it left invalid that could not be
/// dropped (which a retry's `IF NOT EXISTS` would take for done).
struct AttemptFailure {
    failure: Failure,
    left_invalid: Vec<String>,
}

impl From<Failure> for AttemptFailure {
    fn from(failure: Failure) -> Self {
        AttemptFailure {
            failure,
            left_invalid: Vec::new(),
        }
    }
}

impl From<diesel::result::Error> for AttemptFailure {
    fn from(error: diesel::result::Error) -> Self {
        Failure::from(error).into()
    }
}

/// One attempt: in a transaction whose `lock_timeout` is the options' (the
/// migration's own transaction is a savepoint inside it), or, for a
/// migration that must run outside a transaction (`CREATE INDEX
/// CONCURRENTLY`), see [`attempt_outside_transaction`].
fn attempt_once(
    conn: &mut PgConnection,
    migration: &dyn Migration<Pg>,
    direction: Direction,
    options: &MigrationOptions,
    setup: bool,
    deadline: Instant,
) -> Result<(), AttemptFailure> {
    let timeout = crate::lock::setting(options.lock_timeout());
    let run = |conn: &mut PgConnection| -> Result<(), Failure> {
        if setup {
            conn.setup()?;
        }
        match direction {
            Direction::Apply => conn.run_migration(migration).map(drop),
            Direction::Revert => conn.revert_migration(migration).map(drop),
        }
    };
    if migration.metadata().run_in_transaction() {
        return conn
            .transaction(|conn| {
                set_lock_timeout(conn, &timeout, true)?;
                run(conn)
            })
            .map_err(AttemptFailure::from);
    }
    let previous = set_lock_timeout(conn, &timeout, false)?;
    let result = attempt_outside_transaction(conn, run, options, deadline);
    set_lock_timeout(conn, &previous, false)?;
    result
}

/// An attempt outside a transaction, with the session's `lock_timeout` set
/// (by the caller) for the attempt. A `CREATE INDEX CONCURRENTLY` that
/// times out waiting for older transactions leaves an invalid index behind;
/// it is dropped (`DROP INDEX CONCURRENTLY`, which does not block writers
/// but must wait for the same sessions) waiting at most until `deadline`.
/// An index that could not be dropped is reported, so that the migration is
/// not retried over it.
fn attempt_outside_transaction(
    conn: &mut PgConnection,
    run: impl FnOnce(&mut PgConnection) -> Result<(), Failure>,
    options: &MigrationOptions,
    deadline: Instant,
) -> Result<(), AttemptFailure> {
    let invalid_before = invalid_indexes(conn)?;
    let Err(failure) = run(conn) else {
        return Ok(());
    };
    let left: Vec<String> = invalid_indexes(conn)?
        .difference(&invalid_before)
        .cloned()
        .collect();
    if left.is_empty() {
        return Err(failure.into());
    }
    let patience = deadline
        .saturating_duration_since(Instant::now())
        .max(options.lock_timeout());
    set_lock_timeout(conn, &crate::lock::setting(patience), false)?;
    let mut left_invalid = Vec::new();
    for index in left {
        tracing::info!("dropping index {index}, left invalid by the failed attempt");
        let dropped =
            diesel::sql_query(format!("DROP INDEX CONCURRENTLY IF EXISTS {index}")).execute(conn);
        if dropped.is_err() {
            left_invalid.push(index);
        }
    }
    Err(AttemptFailure {
        failure,
        left_invalid,
    })
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    previous: String,
}

/// Set `lock_timeout` (for the transaction when `local`); returns the value
/// it had.
pub(super) fn set_lock_timeout(
    conn: &mut PgConnection,
    value: &str,
    local: bool,
) -> QueryResult<String> {
    let previous = diesel::sql_query(include_str!("lock_timeout.sql"))
        .get_result::<Setting>(conn)?
        .previous;
    diesel::sql_query(include_str!("set_lock_timeout.sql"))
        .bind::<Text, _>(value)
        .bind::<Bool, _>(local)
        .execute(conn)?;
    Ok(previous)
}

#[derive(QueryableByName)]
struct Index {
    #[diesel(sql_type = Text)]
    name: String,
}

/// The indexes PostgreSQL holds as invalid (a failed `CREATE INDEX
/// CONCURRENTLY` leaves one), by qualified, quoted name.
fn invalid_indexes(conn: &mut PgConnection) -> QueryResult<HashSet<String>> {
    diesel::sql_query(include_str!("invalid_indexes.sql"))
        .load::<Index>(conn)
        .map(|rows| rows.into_iter().map(|row| row.name).collect())
}
