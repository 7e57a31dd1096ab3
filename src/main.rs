//! `machine-state`: the command line of the crate (a thin first version).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use diesel::{Connection, PgConnection};
use machine_state::{AnyMachine, EmbeddedPostgres};
use uuid::Uuid;

/// Move machines through their states without ever diverging the two tables.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// PostgreSQL URL; without one, an embedded server is started.
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations.
    Migrate,
    /// Show one machine.
    Show {
        /// The machine id.
        id: Uuid,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<(), machine_state::Error> {
    let (_server, url) = match cli.database_url {
        Some(url) => (None, url),
        None => {
            let server = EmbeddedPostgres::builder()
                .data_dir(".machine-state/pgdata")
                .start()?;
            let url = server.url("postgres");
            (Some(server), url)
        }
    };
    let conn = &mut PgConnection::establish(&url)?;
    match cli.command {
        Command::Migrate => {
            for version in machine_state::run_migrations(conn)? {
                println!("applied {version}");
            }
        }
        Command::Show { id } => {
            let machine = AnyMachine::load(conn, id)?;
            println!(
                "{} {} since {}",
                machine.id(),
                machine.state(),
                machine.since()
            );
        }
    }
    Ok(())
}
