//! `machine-state`: the command line of the crate.
//!
//! Parses the arguments, runs one command against PostgreSQL (a
//! `--database-url`, or an embedded server whose data persists in
//! `.machine-state/pgdata`), prints its result, and ends with a documented
//! exit code: 0 success, 1 a refused transition or an inconsistency found,
//! 2 bad usage, bad input or no usable database (nothing applied), 3 the
//! outcome of a transition unknown (its operation id resolves it).

mod cli;

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = cli::Cli::parse_with_exit_codes();
    let quiet = match args.command {
        cli::Command::Demo(_) => Quiet::Demo,
        cli::Command::Migrate(_) | cli::Command::Rollback { .. } => Quiet::Migrating,
        _ => Quiet::Default,
    };
    init_logging(args.verbose, quiet);
    let exit = match cli::run(args) {
        Ok(exit) => exit,
        Err(error) => {
            eprintln!("error: {}", error.one_line());
            error.exit()
        }
    };
    exit.into()
}

/// What the default log level leaves out, or adds, for a command.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quiet {
    /// Warnings only.
    Default,
    /// The demo refuses stale transitions by the hundred, on purpose, and
    /// counts them: at the default level their warnings are left out.
    Demo,
    /// `migrate` and `rollback` show their progress (which migration,
    /// waiting on whom, retry n of m) at the default level.
    Migrating,
}

/// Logs on stderr: warnings by default (see [`Quiet`]), `-v` info (each
/// transition), `-vv` debug, `-vvv` trace; `RUST_LOG` overrides.
fn init_logging(verbose: u8, quiet: Quiet) {
    let filter = match verbose {
        0 if quiet == Quiet::Demo => "warn,machine_state::machine=error",
        0 if quiet == Quiet::Migrating => "warn,machine_state::migrations=info",
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
