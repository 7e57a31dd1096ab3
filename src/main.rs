//! `machine-state`: the command line of the crate.
//!
//! Parses the arguments, runs one command against PostgreSQL (a
//! `--database-url`, or an embedded server whose data persists in
//! `.machine-state/pgdata`), prints its result, and ends with a documented
//! exit code: 0 success, 1 a refused transition or an inconsistency found,
//! 2 bad usage, bad input or no usable database.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse_with_exit_codes();
    cli::init_logging(args.verbose, matches!(args.command, cli::Command::Demo(_)));
    let exit = match cli::run(args) {
        Ok(exit) => exit,
        Err(error) => {
            eprintln!("error: {}", error.one_line());
            error.exit()
        }
    };
    exit.into()
}
