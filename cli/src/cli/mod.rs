//! The pieces of the `machine-state` command, one concern per module:
//!
//! - [`args`]: every command and option, with their help;
//! - [`database`]: the `--database-url`, or the embedded server;
//! - [`migrations`], [`machines`], [`consistency`]: the commands;
//! - [`demo`]: the legacy race, reproduced, next to this crate;
//! - [`watch`]: the audit on a timer, and the Prometheus endpoint;
//! - [`output`]: text and JSON; [`error`]: errors and exit codes.

pub(crate) mod args;
pub(crate) mod consistency;
pub(crate) mod database;
pub(crate) mod demo;
pub(crate) mod error;
pub(crate) mod gauges;
pub(crate) mod machines;
pub(crate) mod migrations;
pub(crate) mod output;
pub(crate) mod watch;

use machine_state::Action;

pub(crate) use args::{Cli, Command};
pub(crate) use error::{CliError, Exit};

use database::{Database, Embedded, Schema};

/// Run the command: check what can be checked without a database, open the
/// database (starting the embedded server if needed), run, stop the server.
///
/// # Errors
///
/// Whatever ended the command; see [`CliError::exit`] for its exit code.
pub(crate) fn run(cli: Cli) -> Result<Exit, CliError> {
    let message = match &cli.command {
        Command::Fail { message, .. } => Some(message.read()?),
        _ => None,
    };
    if let Command::Watch(args) = &cli.command {
        // Opens the database for each audit itself.
        return watch::run(&cli.database, args);
    }
    let schema = match cli.command {
        Command::Migrate(_)
        | Command::Rollback { .. }
        | Command::Demo(_)
        | Command::ExportMigrations => Schema::AsIs,
        _ => Schema::Current,
    };
    let embedded = match cli.command {
        Command::Demo(_) => Embedded::Throwaway,
        _ => Embedded::Persistent,
    };
    let database = Database::open(&cli.database, schema, embedded)?;
    let outcome = dispatch(&database, cli.command, message, cli.verbose == 0);
    let stopped = database.stop();
    let exit = outcome?;
    stopped?;
    Ok(exit)
}

/// Run one command on the open database.
fn dispatch(
    database: &Database,
    command: Command,
    message: Option<String>,
    show_progress: bool,
) -> Result<Exit, CliError> {
    let connect = || database.connect();
    match command {
        Command::Demo(args) => demo::run(database, &args, show_progress),
        Command::Migrate(wait) => migrations::migrate(&mut connect()?, &wait.options()),
        Command::ExportMigrations => migrations::export(&mut connect()?),
        Command::Grant { role } => consistency::grant(&mut connect()?, &role),
        Command::Revoke { role } => consistency::revoke(&mut connect()?, &role),
        Command::Rollback { all, wait } => {
            migrations::rollback(&mut connect()?, all, &wait.options())
        }
        Command::Add { id, state } => machines::add(&mut connect()?, id, state),
        Command::Show { id, json } => machines::show(&mut connect()?, id, json),
        Command::List { json } => machines::list(&mut connect()?, json),
        Command::Operation { id, json } => machines::operation(&mut connect()?, id, json),
        Command::Start {
            id,
            process,
            operation_id,
        } => {
            let process = process.unwrap_or_else(uuid::Uuid::new_v4);
            let transition = machines::Transition {
                id,
                action: Action::Start(process),
                operation_id,
            };
            machines::transition(&mut connect()?, database.lock_timeout(), transition)
        }
        Command::Fail {
            id, operation_id, ..
        } => {
            let transition = machines::Transition {
                id,
                action: Action::Fail(message.unwrap_or_default()),
                operation_id,
            };
            machines::transition(&mut connect()?, database.lock_timeout(), transition)
        }
        Command::Complete { id, operation_id }
        | Command::Stop { id, operation_id }
        | Command::Reset { id, operation_id }
        | Command::Online { id, operation_id }
        | Command::Offline { id, operation_id } => {
            let action = match command {
                Command::Complete { .. } => Action::Complete,
                Command::Stop { .. } => Action::Stop,
                Command::Reset { .. } => Action::Reset,
                Command::Online { .. } => Action::BringOnline,
                _ => Action::TakeOffline,
            };
            let transition = machines::Transition {
                id,
                action,
                operation_id,
            };
            machines::transition(&mut connect()?, database.lock_timeout(), transition)
        }
        Command::Audit { json } => consistency::audit(&mut connect()?, json),
        Command::Repair { dry_run, json } => consistency::repair(&mut connect()?, dry_run, json),
        Command::Doctor {
            json,
            fix,
            undo_fix,
            patience,
        } => consistency::doctor(&mut connect()?, json, fix, undo_fix, &patience.options()),
        Command::PruneHistory {
            older_than,
            batch,
            prepare_days,
            patience,
        } => consistency::prune_history(
            &mut connect()?,
            older_than,
            batch,
            prepare_days,
            &patience.options(),
        ),
        Command::Stuck { older_than, json } => {
            consistency::stuck(&mut connect()?, older_than, json)
        }
        Command::Watch(_) => unreachable!("`run` hands `watch` over before opening a database"),
    }
}
