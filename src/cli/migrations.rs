//! `migrate` and `rollback`.

use diesel::PgConnection;
use machine_state::MigrationOptions;

use super::error::{CliError, Exit};
use super::output;

/// `migrate`: apply every pending migration (waiting for locks as `options`
/// say; the library logs the progress, which `main` shows at info level),
/// printing each version, then warn (on stderr) when `doctor` finds anything
/// exposed: grants the legacy system made on adopted tables are kept, for
/// operators to retire.
pub(crate) fn migrate(
    conn: &mut PgConnection,
    options: &MigrationOptions,
) -> Result<Exit, CliError> {
    let applied = machine_state::run_migrations_with(conn, options)?;
    if applied.is_empty() {
        output::line("the database is up to date")?;
    }
    for version in applied {
        output::line(format_args!("applied {version}"))?;
    }
    if let Ok(report) = machine_state::doctor(conn)
        && report.is_exposed()
    {
        eprintln!(
            "warning: {} exposure(s) found (legacy grants are kept): run `machine-state doctor`",
            report.exposures.len()
        );
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
        machine_state::revert_all_migrations_with(conn, options)?
    } else {
        vec![machine_state::revert_last_migration_with(conn, options)?]
    };
    if reverted.is_empty() {
        output::line("no migration to revert")?;
    }
    for version in reverted {
        output::line(format_args!("reverted {version}"))?;
    }
    Ok(Exit::Success)
}
