//! What the three examples share: the database (`DATABASE_URL`, or the
//! embedded default the command line uses too:
//! `EmbeddedPostgres::default_data_dir()`) and
//! the legacy `process_executions` table the call sites also write.

#![allow(dead_code, reason = "each example uses a part of this module")]

use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Nullable, Text, Uuid as SqlUuid};
use machine_state::{EmbeddedPostgres, Error, Pool};
use uuid::Uuid;

/// A pool on the example database, and the embedded server behind it (if
/// any), stopped when this is dropped.
pub(crate) struct Database {
    pub(crate) pool: Pool,
    _server: Option<EmbeddedPostgres>,
}

/// Connect (starting the embedded server when there is no `DATABASE_URL`),
/// apply the migrations, and create `process_executions` where missing.
pub(crate) fn open() -> Result<Database, Error> {
    let (server, url) = match std::env::var("DATABASE_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = EmbeddedPostgres::builder()
                .data_dir(EmbeddedPostgres::default_data_dir()?)
                .start()?;
            let url = server.url("postgres");
            (Some(server), url)
        }
    };
    let pool = machine_state::pool(&url)?;
    let conn = &mut pool.get()?;
    machine_state::run_migrations(conn)?;
    sql_query(
        "CREATE TABLE IF NOT EXISTS process_executions (
             id uuid PRIMARY KEY,
             machine_id uuid NOT NULL,
             status text NOT NULL,
             started_at timestamptz NOT NULL DEFAULT now(),
             ended_at timestamptz,
             error_message text,
             aborted boolean NOT NULL DEFAULT false
         )",
    )
    .execute(conn)?;
    // The callers' own guard: one running execution per machine, whatever
    // writes the table.
    sql_query(
        "CREATE UNIQUE INDEX IF NOT EXISTS process_executions_one_running_per_machine
         ON process_executions (machine_id) WHERE status = 'running'",
    )
    .execute(conn)?;
    Ok(Database {
        pool,
        _server: server,
    })
}

/// The starter's own write: a new execution, `running`.
pub(crate) fn record_start(
    conn: &mut PgConnection,
    machine: Uuid,
    process: Uuid,
) -> Result<(), Error> {
    sql_query("INSERT INTO process_executions (id, machine_id, status) VALUES ($1, $2, 'running')")
        .bind::<SqlUuid, _>(process)
        .bind::<SqlUuid, _>(machine)
        .execute(conn)?;
    Ok(())
}

/// The executor's and stopper's own write: how the execution ended.
pub(crate) fn record_end(
    conn: &mut PgConnection,
    process: Uuid,
    status: &str,
    error_message: Option<&str>,
) -> Result<(), Error> {
    sql_query(
        "UPDATE process_executions
         SET status = $2, ended_at = now(), error_message = $3, aborted = ($2 = 'aborted')
         WHERE id = $1",
    )
    .bind::<SqlUuid, _>(process)
    .bind::<Text, _>(status)
    .bind::<Nullable<Text>, _>(error_message)
    .execute(conn)?;
    Ok(())
}

/// Print a machine's history, oldest first.
pub(crate) fn print_history(conn: &mut PgConnection, machine: Uuid) -> Result<(), Error> {
    println!("history of {machine}:");
    for entry in machine_state::history::history(conn, machine)? {
        println!(
            "  {:>10} -> {:<10} {:<10} {}",
            entry
                .from_state
                .as_ref()
                .map(machine_state::StoredState::as_str)
                .unwrap_or("(new)"),
            entry.to_state,
            entry.kind,
            entry.description.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
