//! `migrate` and `rollback`.

use diesel::PgConnection;

use super::error::{CliError, Exit};
use super::output;

/// `migrate`: apply every pending migration, printing each version, then
/// warn (on stderr) when `doctor` finds anything exposed: grants the legacy
/// system made on adopted tables are kept, for operators to retire.
pub(crate) fn migrate(conn: &mut PgConnection) -> Result<Exit, CliError> {
    let applied = machine_state::run_migrations(conn)?;
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

/// `rollback`: revert the most recent migration, or all of them.
pub(crate) fn rollback(conn: &mut PgConnection, all: bool) -> Result<Exit, CliError> {
    let reverted = if all {
        machine_state::revert_all_migrations(conn)?
    } else {
        vec![machine_state::revert_last_migration(conn)?]
    };
    if reverted.is_empty() {
        output::line("no migration to revert")?;
    }
    for version in reverted {
        output::line(format_args!("reverted {version}"))?;
    }
    Ok(Exit::Success)
}
