//! `doctor --fix` and `doctor --undo-fix`: the statements each exposure
//! carries, applied in one transaction and recorded with their undo in
//! `machine_state_private.doctor_fixes` (migration 2026-12-05-200000, whose
//! down.sql undoes what is still recorded).

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Array, BigInt, Text};

use super::{Exposure, ExposureKind, exposures};
use crate::error::Error;
use crate::migrations::{MigrationOptions, with_lock_retries};

/// One exposure closed by [`fix_exposures`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AppliedFix {
    /// What was found (the exposure, as `doctor` words it).
    pub finding: String,
    /// Which check found it.
    pub kind: ExposureKind,
    /// The statements run.
    pub statements: Vec<String>,
}

/// Close every exposure [`doctor`](super::doctor) finds now, in one
/// transaction: run each one's [`Exposure::fix`] and record it with its
/// [`Exposure::undo`]. Idempotent: what is closed is no longer found, so a
/// second run applies nothing. Nothing is taken from the tables' owner or
/// its members (they are never a finding), and no grant made through
/// `machine_state_grant_application` is touched; the services' access
/// ([`super::LockedOut`]) is the operator's grant, not a fix.
///
/// Run it as the owner of the tables and functions (the role that ran the
/// migrations). Safe while the machines run: its locks are waited for as
/// [`MigrationOptions::default`] says (see [`fix_exposures_with`]).
///
/// # Errors
///
/// [`Error::NotMigrated`] before the migrations (or their bookkeeping) are
/// applied; [`Error::Database`] when a statement fails (the role is not the
/// owner: SQLSTATE 42501), and [`Error::Blocked`] when other sessions held
/// the tables past the budget; then nothing is changed.
pub fn fix_exposures(conn: &mut PgConnection) -> Result<Vec<AppliedFix>, Error> {
    fix_exposures_with(conn, &MigrationOptions::default())
}

/// [`fix_exposures`], waiting for locks as `options` say. Turning row level
/// security on (`ALTER TABLE`) and creating a policy take an ACCESS
/// EXCLUSIVE lock on the table, and PostgreSQL queues every later writer
/// behind a lock request that waits (for a legacy writer stalled between its
/// two writes, say): so each attempt waits at most `options.lock_timeout()`
/// for any one lock, and is tried again until `options.budget()` is spent.
///
/// # Errors
///
/// As [`fix_exposures`].
pub fn fix_exposures_with(
    conn: &mut PgConnection,
    options: &MigrationOptions,
) -> Result<Vec<AppliedFix>, Error> {
    require_bookkeeping(conn)?;
    with_lock_retries(conn, options, "fixing the exposures", |conn| {
        let mut applied = Vec::new();
        for exposure in exposures(conn)? {
            if exposure.fix.is_empty() {
                continue;
            }
            let Exposure {
                kind, fix, undo, ..
            } = &exposure;
            for statement in fix {
                conn.batch_execute(statement)?;
            }
            let finding = exposure.to_string();
            sql_query(include_str!("record_fix.sql"))
                .bind::<Text, _>(&finding)
                .bind::<Text, _>(fix.join(";\n"))
                .bind::<Array<Text>, _>(undo)
                .execute(conn)?;
            applied.push(AppliedFix {
                finding,
                kind: *kind,
                statements: fix.clone(),
            });
        }
        Ok(applied)
    })
}

#[derive(QueryableByName)]
struct Recorded {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Array<Text>)]
    undo: Vec<String>,
}

/// Undo every fix [`fix_exposures`] recorded, newest first, in one transaction, and
/// forget them; returns the statements run (none when nothing is recorded).
/// Waits for locks as [`MigrationOptions::default`] says (see
/// [`undo_fixes_with`]).
///
/// # Errors
///
/// [`Error::NotMigrated`] before the migrations are applied;
/// [`Error::Database`] when a statement fails, and [`Error::Blocked`] when
/// other sessions held the tables past the budget; then nothing is changed.
pub fn undo_fixes(conn: &mut PgConnection) -> Result<Vec<String>, Error> {
    undo_fixes_with(conn, &MigrationOptions::default())
}

/// [`undo_fixes`], waiting for locks as `options` say (as in
/// [`fix_exposures_with`]).
///
/// # Errors
///
/// As [`undo_fixes`].
pub fn undo_fixes_with(
    conn: &mut PgConnection,
    options: &MigrationOptions,
) -> Result<Vec<String>, Error> {
    require_bookkeeping(conn)?;
    with_lock_retries(conn, options, "undoing the fixes", |conn| {
        let recorded = sql_query(include_str!("recorded_fixes.sql")).load::<Recorded>(conn)?;
        let mut run = Vec::new();
        for fix in recorded {
            for statement in fix.undo {
                conn.batch_execute(&statement)?;
                run.push(statement);
            }
            sql_query(include_str!("forget_fix.sql"))
                .bind::<BigInt, _>(fix.id)
                .execute(conn)?;
        }
        Ok(run)
    })
}

#[derive(QueryableByName)]
struct Present {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    present: bool,
}

/// [`Error::NotMigrated`] unless `doctor_fixes` exists.
fn require_bookkeeping(conn: &mut PgConnection) -> Result<(), Error> {
    let present = sql_query(include_str!("fixes_recorded_here.sql"))
        .get_result::<Present>(conn)?
        .present;
    if present {
        Ok(())
    } else {
        Err(Error::NotMigrated("machine_state_private.doctor_fixes"))
    }
}
