//! A recipe executor's core, on machine-state: each step moves the machine
//! and writes the service's own `process_executions` row in one transaction.

use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use machine_state::diesel::prelude::*;
use machine_state::diesel::sql_types::{Nullable, Text, Uuid as SqlUuid};
use machine_state::uuid::Uuid;
use machine_state::{Error, RecipeRun, RetryPolicy, TransitionError, find_operation, transaction};

/// The service's own migrations (run after the crate's).
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// What can go wrong in the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The recipe was refused before it started.
    #[error("recipe refused: {0}")]
    Rejected(String),
    /// The machine's state refused or failed.
    #[error(transparent)]
    Machine(#[from] Error),
    /// The service's own migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
}

/// `?` on a transition: the refused machine is not needed here.
impl<M> From<TransitionError<M>> for ServiceError {
    fn from(refused: TransitionError<M>) -> Self {
        ServiceError::Machine(refused.error)
    }
}

/// The crate's migrations, then the service's own.
pub fn migrate(conn: &mut PgConnection) -> Result<(), ServiceError> {
    machine_state::run_migrations(conn)?;
    conn.run_pending_migrations(MIGRATIONS)
        .map_err(|e| ServiceError::Migration(e.to_string()))?;
    Ok(())
}

fn set_status(
    conn: &mut PgConnection,
    run: &RecipeRun,
    status: &str,
    message: Option<&str>,
) -> Result<(), Error> {
    machine_state::diesel::sql_query(
        "INSERT INTO process_executions (id, machine_id, status, error_message)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET status = $3, error_message = $4",
    )
    .bind::<SqlUuid, _>(run.process_id)
    .bind::<SqlUuid, _>(run.machine_id)
    .bind::<Text, _>(status)
    .bind::<Nullable<Text>, _>(message)
    .execute(conn)?;
    Ok(())
}

/// Start `recipe` as run `process_id` on `machine_id`: the machine goes to
/// `processing` and the run's row is written, together or not at all.
/// `operation_id` makes a retry (after an unknown outcome) apply at most once.
pub fn start(
    conn: &mut PgConnection,
    machine_id: Uuid,
    process_id: Uuid,
    recipe: &str,
    operation_id: Uuid,
) -> Result<RecipeRun, ServiceError> {
    let run = RecipeRun::on(machine_id).run(process_id);
    transaction(conn, &RetryPolicy::default(), |conn| {
        if recipe.trim().is_empty() {
            return Err(ServiceError::Rejected("the recipe is empty".into()));
        }
        run.start(conn, operation_id)?;
        set_status(conn, &run, "running", None)?;
        Ok(run)
    })
}

/// The recipe finished: `processing -> idle`, the run `completed`.
pub fn complete(
    conn: &mut PgConnection,
    run: &RecipeRun,
    operation_id: Uuid,
) -> Result<(), ServiceError> {
    transaction(conn, &RetryPolicy::default(), |conn| {
        run.complete(conn, operation_id)?;
        set_status(conn, run, "completed", None)?;
        Ok(())
    })
}

/// What became of an operation whose outcome was unknown (a connection lost
/// at COMMIT): applied, or not. Never guess: look it up.
pub fn resolve(conn: &mut PgConnection, operation_ids: &[Uuid]) -> Result<bool, ServiceError> {
    let mut applied = Vec::new();
    for &id in operation_ids {
        applied.push(find_operation(conn, id)?.is_some());
    }
    // One transaction: all of its operations committed, or none.
    Ok(applied.iter().all(|&a| a))
}
