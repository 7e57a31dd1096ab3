//! `migrate` and `rollback`.

use diesel::PgConnection;
use machine_state::MigrationOptions;

use super::error::{CliError, Exit};
use super::output;

/// `migrate`: apply every pending migration (waiting for locks as `options`
/// say; the library logs the progress, which `main` shows at info level),
/// printing each version, then warn (on stderr) when `doctor` finds anything
/// exposed (grants the legacy system made on adopted tables are kept, for
/// `doctor --fix`), and say what to run when the services are locked out of
/// the transitions.
pub(crate) fn migrate(
    conn: &mut PgConnection,
    options: &MigrationOptions,
) -> Result<Exit, CliError> {
    let applied = machine_state::migrations::run_migrations_with(conn, options)?;
    if applied.is_empty() {
        output::line("the database is up to date")?;
    }
    for version in applied {
        output::line(format_args!("applied {version}"))?;
    }
    if let Ok(report) = machine_state::doctor::doctor(conn) {
        if report.is_exposed() {
            eprintln!(
                "warning: {} exposure(s) found (legacy grants are kept): run `machine-state doctor`, \
                 then `machine-state doctor --fix`",
                report.exposures.len()
            );
        }
        if let Some(locked_out) = &report.locked_out {
            eprintln!(
                "note: {locked_out}; let the services in with `machine-state grant {}` \
                 (or, as the owner, `{}`)",
                locked_out.role, locked_out.sql
            );
        }
    }
    Ok(Exit::Success)
}

/// `export-migrations`: the pending migrations as one SQL script on stdout.
pub(crate) fn export(conn: &mut PgConnection) -> Result<Exit, CliError> {
    match machine_state::migrations::pending_migrations_script(conn)? {
        Some(script) => output::line(script.trim_end())?,
        None => eprintln!("no pending migration"),
    }
    Ok(Exit::Success)
}

/// `rollback`: revert the most recent migration of this crate, or all of
/// them, waiting for locks as `options` say.
pub(crate) fn rollback(
    conn: &mut PgConnection,
    all: bool,
    options: &MigrationOptions,
) -> Result<Exit, CliError> {
    let reverted = if all {
        machine_state::migrations::revert_all_migrations_with(conn, options)?
    } else {
        vec![machine_state::migrations::revert_last_migration_with(
            conn, options,
        )?]
    };
    if reverted.is_empty() {
        output::line("no migration to revert")?;
    }
    for version in reverted {
        output::line(format_args!("reverted {version}"))?;
    }
    Ok(Exit::Success)
}
