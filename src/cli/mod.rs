//! The pieces of the `machine-state` command, one concern per module:
//!
//! - [`args`]: every command and option, with their help;
//! - [`database`]: the `--database-url`, or the embedded server;
//! - [`migrations`], [`machines`], [`consistency`]: the commands;
//! - [`demo`] and [`legacy`]: the legacy race, reproduced, next to this crate;
//! - [`output`]: text and JSON; [`error`]: errors and exit codes.

pub mod args;
pub mod consistency;
pub mod database;
pub mod demo;
pub mod error;
pub mod legacy;
pub mod machines;
pub mod migrations;
pub mod output;

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::Path;

use machine_state::{Action, MAX_DESCRIPTION_CHARS};
use tracing_subscriber::EnvFilter;

pub use args::{Cli, Command};
pub use error::{CliError, Exit};

use args::MessageArgs;
use database::{Database, Embedded, Schema};

/// Run the command: check what can be checked without a database, open the
/// database (starting the embedded server if needed), run, stop the server.
///
/// # Errors
///
/// Whatever ended the command; see [`CliError::exit`] for its exit code.
pub fn run(cli: Cli) -> Result<Exit, CliError> {
    let message = match &cli.command {
        Command::Fail { message, .. } => Some(read_message(message)?),
        _ => None,
    };
    let schema = match cli.command {
        Command::Migrate | Command::Rollback { .. } | Command::Demo(_) => Schema::AsIs,
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

fn dispatch(
    database: &Database,
    command: Command,
    message: Option<String>,
    show_progress: bool,
) -> Result<Exit, CliError> {
    let connect = || database.connect();
    match command {
        Command::Demo(args) => demo::run(database, &args, show_progress),
        Command::Migrate => migrations::migrate(&mut connect()?),
        Command::Rollback { all } => migrations::rollback(&mut connect()?, all),
        Command::Add { id, state } => machines::add(&mut connect()?, id, state),
        Command::Show { id, json } => machines::show(&mut connect()?, id, json),
        Command::List { json } => machines::list(&mut connect()?, json),
        Command::Start { id, process } => {
            let process = process.unwrap_or_else(uuid::Uuid::new_v4);
            machines::transition(&mut connect()?, id, Action::Start(process))
        }
        Command::Complete { id } => machines::transition(&mut connect()?, id, Action::Complete),
        Command::Stop { id } => machines::transition(&mut connect()?, id, Action::Stop),
        Command::Fail { id, .. } => {
            let message = message.unwrap_or_default();
            machines::transition(&mut connect()?, id, Action::Fail(message))
        }
        Command::Reset { id } => machines::transition(&mut connect()?, id, Action::Reset),
        Command::Online { id } => machines::transition(&mut connect()?, id, Action::BringOnline),
        Command::Offline { id } => machines::transition(&mut connect()?, id, Action::TakeOffline),
        Command::Audit { json } => consistency::audit(&mut connect()?, json),
        Command::Repair { dry_run, json } => consistency::repair(&mut connect()?, dry_run, json),
        Command::Stuck { older_than, json } => {
            consistency::stuck(&mut connect()?, older_than, json)
        }
    }
}

/// The failure description of `fail`: given, or read from a file or stdin
/// (reading at most what the longest valid description can take), and
/// checked.
fn read_message(args: &MessageArgs) -> Result<String, CliError> {
    let Some(path) = &args.message_file else {
        return Ok(args.message.clone().unwrap_or_default());
    };
    let limit = 4 * MAX_DESCRIPTION_CHARS as u64 + 1;
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        File::open(path).and_then(|file| file.take(limit).read_to_end(&mut bytes))
    };
    read.map_err(|source| CliError::ReadMessage {
        path: path.clone(),
        source,
    })?;
    let source = if path == Path::new("-") {
        "standard input".to_owned()
    } else {
        format!("`{}`", path.display())
    };
    if bytes.len() as u64 == limit {
        return Err(CliError::Input(format!(
            "a failure description is limited to {MAX_DESCRIPTION_CHARS} characters, \
             {source} holds more"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        CliError::Input(format!(
            "a failure description must be UTF-8 text, {source} is not"
        ))
    })?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    args::check_message(text).map_err(CliError::Input)?;
    Ok(text.to_owned())
}

/// Logs on stderr: warnings by default, `-v` info (each transition), `-vv`
/// debug, `-vvv` trace; `RUST_LOG` overrides.
///
/// The demo refuses stale transitions by the hundred, on purpose, and counts
/// them: at the default level their warnings are left out.
pub fn init_logging(verbose: u8, demo: bool) {
    let filter = match verbose {
        0 if demo => "warn,machine_state::machine=error",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
}
