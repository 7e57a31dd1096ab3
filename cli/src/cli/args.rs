//! Every command, option and help text of `machine-state`.

use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use machine_state::pool::ConnectionMode;
use machine_state::{MAX_DESCRIPTION_CHARS, validate_description};
use uuid::Uuid;

use super::error::CliError;

/// The exit codes, shown after `--help`.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  a transition was refused (illegal from the current state, or another
     transition got there first), or an inconsistency was found (`audit`,
     `repair`, an inconsistent or unknown state in the database), or
     `migrate`/`rollback`/`prune-history`/`doctor --fix` gave up because
     other sessions held the locks it needs past its budget (that step is
     not applied; the message names the sessions)
  2  bad usage or input (malformed id, unknown machine, invalid message),
     or no usable database (unreachable, not migrated): nothing was applied
  3  the outcome of a transition is unknown (the connection broke while it
     ran: it may have applied); the error names its operation id: run
     `machine-state operation <id>`, or retry the same command once with
     `--operation-id <id>` (it applies at most once)";

/// Move machines through their states without ever letting `machines` and
/// `machine_state` disagree.
///
/// Without `--database-url` (or `DATABASE_URL`), each command starts an
/// embedded PostgreSQL server whose data persists in `.machine-state/pgdata`
/// under the current directory, applies pending migrations to it, and stops it
/// when done: try `machine-state demo`, or `add`, `start`, `complete`, `show`.
#[derive(Debug, Parser)]
#[command(name = "machine-state", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// More logs on stderr: `-v` for each transition, `-vv` for debugging
    /// (defaults to warnings only; `RUST_LOG` overrides).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub(crate) verbose: u8,

    /// Which database to use.
    #[command(flatten)]
    pub(crate) database: DatabaseArgs,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// Parse the command line, with the exit codes shown after every
    /// command's help; exits with 2 (0 for `--help`) on bad usage.
    pub(crate) fn parse_with_exit_codes() -> Cli {
        let command = Cli::command().mut_subcommands(|sub| sub.after_help(EXIT_CODES));
        let mut matches = command.get_matches();
        Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|error| error.exit())
    }
}

/// The database options, shared by every command.
#[derive(Debug, Args)]
#[command(next_help_heading = "Database")]
pub(crate) struct DatabaseArgs {
    /// PostgreSQL URL (libpq syntax, e.g. `postgresql://user@host/db`); it is
    /// never migrated implicitly: run `migrate` first. Without one (or with an
    /// empty one), an embedded server is started for the command.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub(crate) database_url: Option<String>,

    /// Where the embedded server keeps its data, created on first use
    /// [default: .machine-state/pgdata].
    ///
    /// As root, the server runs as the `postgres` user (`initdb` refuses
    /// root), which must be able to reach this directory; when the default
    /// is out of its reach (under `/root`, say), the data goes to
    /// `/var/lib/machine-state/<directory name>-<hash>/pgdata` instead, the
    /// same for every command run from the same directory. `demo` uses a
    /// throwaway server instead.
    #[arg(
        long,
        value_name = "DIR",
        env = "MACHINE_STATE_DATA_DIR",
        hide_env_values = true,
        global = true,
        conflicts_with = "database_url"
    )]
    pub(crate) data_dir: Option<PathBuf>,

    /// Reach the database through a transaction-mode pooler (PgBouncer's
    /// `pool_mode = transaction`, Supabase's pooler): no session settings,
    /// no named prepared statements. `--pooler` alone means `transaction`;
    /// `--pooler=direct` undoes a `machine_state_pooler=transaction` in the
    /// URL.
    #[arg(
        long,
        value_name = "MODE",
        env = "MACHINE_STATE_POOLER",
        global = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "transaction",
        value_parser = parse_pooler
    )]
    pub(crate) pooler: Option<ConnectionMode>,

    /// How long a transition waits for a row lock held by another session
    /// (a stalled writer, an open `psql` transaction) before it is refused
    /// (exit code 1, naming the holder), e.g. `500ms`, `10s`; `0s` waits
    /// without limit.
    #[arg(
        long,
        value_name = "DURATION",
        env = "MACHINE_STATE_LOCK_TIMEOUT",
        global = true,
        default_value = "5s",
        value_parser = humantime::parse_duration
    )]
    pub(crate) lock_timeout: Duration,
}

/// How `migrate`, `rollback`, `prune-history` and `doctor --fix` wait for
/// locks other sessions hold.
#[derive(Clone, Copy, Debug, Args)]
pub(crate) struct MigrationArgs {
    /// How long one attempt of a migration (or of preparing or pruning the
    /// history's partitions, or of `doctor`'s fixes) waits for any one lock before it steps out of
    /// the lock queue and tries again later, e.g. `200ms`, `2s`. (The global
    /// `--lock-timeout` is the transitions'.)
    #[arg(
        long,
        visible_alias = "ddl-lock-timeout",
        value_name = "DURATION",
        env = "MACHINE_STATE_MIGRATION_LOCK_TIMEOUT",
        default_value = "500ms",
        value_parser = humantime::parse_duration
    )]
    pub(crate) migration_lock_timeout: Duration,

    /// How long the command keeps trying in all before it gives up (exit
    /// code 1, naming the sessions in its way; the migration it waited for
    /// is not applied, the ones before it are; a prune removes nothing,
    /// `doctor --fix` fixes nothing).
    #[arg(
        long,
        value_name = "DURATION",
        env = "MACHINE_STATE_MIGRATION_BUDGET",
        default_value = "60s",
        value_parser = humantime::parse_duration
    )]
    pub(crate) budget: Duration,
}

impl MigrationArgs {
    /// The library's options.
    pub(crate) fn options(&self) -> machine_state::MigrationOptions {
        machine_state::MigrationOptions::default()
            .with_lock_timeout(self.migration_lock_timeout)
            .with_budget(self.budget)
    }
}

/// `--pooler`'s value.
fn parse_pooler(value: &str) -> Result<ConnectionMode, String> {
    value
        .parse()
        .map_err(|e: machine_state::Error| e.to_string())
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Apply every pending migration, safely on a live database: each
    /// migration waits at most `--migration-lock-timeout` for any one lock
    /// (so writers queued behind it stall at most about that long), and is
    /// retried with jittered backoff until `--budget` is spent; progress is
    /// printed on stderr.
    ///
    /// Where Supabase's API roles exist, ends by saying what to run for the
    /// services' role when it may not run the transitions yet.
    Migrate(#[command(flatten)] MigrationArgs),

    /// Print the pending migrations as one SQL script, for the Supabase CLI
    /// (`supabase/migrations/`) or its SQL editor.
    ///
    /// The script is one transaction that applies each pending migration and
    /// records it in `__diesel_schema_migrations`, so that `migrate` then has
    /// nothing to do. Run it as the role that will own the tables (on
    /// Supabase, `postgres`). Prints nothing when nothing is pending.
    ExportMigrations,

    /// Let a role read the tables and run the transitions through the SQL
    /// functions, and nothing else (`machine_state_grant_application`).
    ///
    /// On Supabase the services' key is `service_role`: `machine-state grant
    /// service_role`. Never `anon` or `authenticated`. Prints the grants made.
    Grant {
        /// The role (it must exist).
        role: String,
    },

    /// Take back from a role exactly what `grant` granted it
    /// (`machine_state_revoke_application`).
    Revoke {
        /// The role.
        role: String,
    },

    /// Revert the most recent migration of this crate (or all of them),
    /// waiting for locks as `migrate` does.
    Rollback {
        /// Revert every migration of this crate, newest first.
        #[arg(long)]
        all: bool,
        /// How to wait for locks.
        #[command(flatten)]
        wait: MigrationArgs,
    },

    /// Register a machine and print its id.
    Add {
        /// The machine's id [default: a new random id].
        #[arg(long)]
        id: Option<Uuid>,
        /// The state it starts in.
        #[arg(long, value_enum, default_value_t = InitialState::Offline)]
        state: InitialState,
    },

    /// Show one machine: its state, process, failure and history.
    Show {
        /// The machine's id.
        id: Uuid,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },

    /// Look an operation up by its id: whether it applied, and what.
    ///
    /// Resolves an unknown outcome (exit code 3): prints the history entry
    /// the operation wrote (exit code 0), or says that it did not apply
    /// (exit code 1). An operation older than the history's retention
    /// (`prune-history`) is not found either.
    Operation {
        /// The operation id, as the failed command printed it.
        id: Uuid,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },

    /// List every machine, flagging diverged ones.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },

    /// `offline|idle -> processing`: start a recipe run.
    Start {
        /// The machine's id.
        id: Uuid,
        /// The recipe run's process id [default: a new random id].
        #[arg(long, value_name = "UUID")]
        process: Option<Uuid>,
        /// The operation's id [default: a new one]. After an unknown outcome
        /// (exit code 3), run the same command again with the id it printed:
        /// it applies at most once, and reports an operation that already
        /// applied as done.
        #[arg(long, value_name = "UUID")]
        operation_id: Option<Uuid>,
    },

    /// `processing -> idle`: the recipe run finished.
    Complete {
        /// The machine's id.
        id: Uuid,
        /// The operation's id [default: a new one]. After an unknown outcome
        /// (exit code 3), run the same command again with the id it printed:
        /// it applies at most once, and reports an operation that already
        /// applied as done.
        #[arg(long, value_name = "UUID")]
        operation_id: Option<Uuid>,
    },

    /// `processing -> idle`: abort the recipe run.
    Stop {
        /// The machine's id.
        id: Uuid,
        /// The operation's id [default: a new one]. After an unknown outcome
        /// (exit code 3), run the same command again with the id it printed:
        /// it applies at most once, and reports an operation that already
        /// applied as done.
        #[arg(long, value_name = "UUID")]
        operation_id: Option<Uuid>,
    },

    /// `processing -> error`: the recipe run failed.
    Fail {
        /// The machine's id.
        id: Uuid,
        /// The failure description.
        #[command(flatten)]
        message: MessageArgs,
        /// The operation's id [default: a new one]. After an unknown outcome
        /// (exit code 3), run the same command again with the id it printed:
        /// it applies at most once, and reports an operation that already
        /// applied as done.
        #[arg(long, value_name = "UUID")]
        operation_id: Option<Uuid>,
    },

    /// `error -> idle`: clear the failure.
    Reset {
        /// The machine's id.
        id: Uuid,
        /// The operation's id [default: a new one]. After an unknown outcome
        /// (exit code 3), run the same command again with the id it printed:
        /// it applies at most once, and reports an operation that already
        /// applied as done.
        #[arg(long, value_name = "UUID")]
        operation_id: Option<Uuid>,
    },

    /// `offline -> idle`: bring the machine online.
    Online {
        /// The machine's id.
        id: Uuid,
        /// The operation's id [default: a new one]. After an unknown outcome
        /// (exit code 3), run the same command again with the id it printed:
        /// it applies at most once, and reports an operation that already
        /// applied as done.
        #[arg(long, value_name = "UUID")]
        operation_id: Option<Uuid>,
    },

    /// `idle|error -> offline`: take the machine offline.
    Offline {
        /// The machine's id.
        id: Uuid,
        /// The operation's id [default: a new one]. After an unknown outcome
        /// (exit code 3), run the same command again with the id it printed:
        /// it applies at most once, and reports an operation that already
        /// applied as done.
        #[arg(long, value_name = "UUID")]
        operation_id: Option<Uuid>,
    },

    /// Find diverged machines (the legacy "0% inconsistency" check).
    ///
    /// Checks every machine's two rows against the invariants I1–I5, lists
    /// each diverged machine and prints the diverged share; exits with 1 when
    /// any machine is diverged.
    Audit {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },

    /// Bring diverged machines back, recording each repair in the history.
    ///
    /// Policy: the row written last wins (`machines` on a tie); if it holds
    /// no usable state (an unknown string, or `processing` without a process),
    /// the other row wins; if neither does, the machine goes `offline`, for an
    /// operator to bring online on purpose. Exits with 1 when a machine was
    /// left diverged (it changed during the repair), or, with `--dry-run`,
    /// when anything would be repaired.
    Repair {
        /// Print what would be repaired, and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },

    /// List machines processing for longer than a duration, oldest first.
    Stuck {
        /// The duration, e.g. `90s`, `15m`, `2h 30m`, `1day`.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        older_than: Duration,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },

    /// Remove history entries older than a window (retention), then create
    /// the coming days' partitions.
    ///
    /// Drops the history's daily partitions wholly older than the window
    /// (seconds and next to no WAL, whatever their size) and keeps each
    /// machine's latest entry, so every history still ends in the machine's
    /// state. An operation id older than the window is forgotten: a retry of
    /// it after pruning may apply again. Run it as the owner of the tables,
    /// daily. Safe while the machines run: every wait for the history's
    /// locks is limited and retried, as in `migrate`, so a session holding
    /// the history open stalls no transition for longer than about
    /// `--migration-lock-timeout`.
    PruneHistory {
        /// The retention window, e.g. `90days`; at least `1day`.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        older_than: Duration,
        /// At most this many entries of the default partition (entries from
        /// before the partitioning, ids outside the daily ranges) per
        /// delete; defaults to 10000.
        #[arg(long, default_value_t = machine_state::history::DEFAULT_BATCH,
              value_parser = clap::value_parser!(u32).range(1..))]
        batch: u32,
        /// Then create the daily partitions from today to this many days
        /// ahead, those missing (at most 366).
        #[arg(long, value_name = "DAYS", default_value_t = 7,
              value_parser = clap::value_parser!(u32).range(0..=366))]
        prepare_days: u32,
        /// How patiently the history's locks are waited for.
        #[command(flatten)]
        patience: MigrationArgs,
    },

    /// Check who can reach the tables and functions (a security check).
    ///
    /// Reports every role other than the owner that can write `machines`,
    /// `machine_state` or the history directly, every SECURITY DEFINER
    /// function executable by a role not granted it through
    /// `machine_state_grant_application`, tables without row level security
    /// in a schema the API (PostgREST, Supabase) exposes, functions without a
    /// pinned `search_path`, and whether enforcement is on; on a project with
    /// Supabase's API roles, whether the services are locked out of the
    /// transitions. Each finding comes with the SQL that closes it. Exits
    /// with 1 when anything is found.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,

        /// Apply the fixes, in one transaction, as the owner; recorded, so
        /// that `--undo-fix` puts back exactly what they changed. The
        /// services' access is not a fix: grant it with `grant`.
        #[arg(long, conflicts_with = "undo_fix")]
        fix: bool,

        /// Undo every fix `--fix` applied, newest first.
        #[arg(long)]
        undo_fix: bool,

        /// How patiently `--fix` and `--undo-fix` wait for the tables'
        /// locks (turning row level security on waits for every session
        /// using the table; a waiting attempt steps out of the queue after
        /// the lock timeout, so the writers go on).
        #[command(flatten)]
        patience: MigrationArgs,
    },

    /// Reproduce the legacy race next to this crate, and compare them.
    ///
    /// Simulated recipe starters, executors and stoppers share the machines,
    /// first with the legacy two-write pattern, then with this crate; the
    /// audit measures the diverged share of each while they run and at the
    /// end. Runs in a throwaway database, so your machines are never
    /// touched: on a throwaway embedded server, or, with `--database-url`,
    /// created on that server (the role needs `CREATEDB`) and dropped after.
    Demo(DemoArgs),

    /// Audit on a timer: one line per audit, and Prometheus metrics.
    ///
    /// Every `--interval`, prints the diverged share, the machines stuck in
    /// `processing` for longer than `--stuck-after`, and whether the database
    /// enforces the invariants; with `--metrics-addr`, serves the same as
    /// Prometheus text. A failed audit prints `audit failed: ...` and the next
    /// one connects again. Runs until Ctrl-C or SIGTERM (exit code 0). Without
    /// `--database-url`, the embedded server runs only during each audit, so
    /// other commands are not kept waiting.
    Watch(WatchArgs),
}

/// The states a machine can be registered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum InitialState {
    /// Powered down or disconnected.
    Offline,
    /// Online, waiting for a recipe.
    Idle,
}

/// Where a failure description comes from: exactly one of the two.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct MessageArgs {
    /// The failure description (at most 4096 characters).
    #[arg(long, value_name = "TEXT", value_parser = parse_message)]
    pub(crate) message: Option<String>,
    /// Read the failure description from a file (`-` for standard input;
    /// one trailing newline is dropped).
    #[arg(long, value_name = "FILE")]
    pub(crate) message_file: Option<PathBuf>,
}

impl MessageArgs {
    /// The failure description: given, or read from a file or stdin (reading
    /// at most what the longest valid description can take), and checked.
    ///
    /// # Errors
    ///
    /// [`CliError::ReadMessage`] when the file cannot be read,
    /// [`CliError::Input`] when its content is no valid description.
    pub(crate) fn read(&self) -> Result<String, CliError> {
        let Some(path) = &self.message_file else {
            return Ok(self.message.clone().unwrap_or_default());
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
        check_message(text).map_err(CliError::Input)?;
        Ok(text.to_owned())
    }
}

/// The knobs of `demo`; the defaults suit a two-core machine and finish in a
/// few seconds.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How many machines the workers share.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) machines: u32,
    /// How many concurrent workers, split evenly among starters, executors
    /// and stoppers.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(3..=64))]
    pub(crate) workers: u32,
    /// How long each of the two runs lasts, in seconds.
    #[arg(long, default_value_t = 3.0, value_parser = parse_seconds)]
    pub(crate) seconds: f64,
}

/// Check a failure description given on the command line.
fn parse_message(text: &str) -> Result<String, String> {
    check_message(text)?;
    Ok(text.to_owned())
}

/// The rules of a failure description ([`validate_description`]), checked
/// before anything is sent to the database.
pub(crate) fn check_message(text: &str) -> Result<(), String> {
    validate_description(text).map_err(|error| match error {
        machine_state::Error::InvalidInput(reason) => reason,
        other => other.to_string(),
    })
}

/// A positive number of seconds, at most an hour.
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= 3600.0 => Ok(seconds),
        Ok(_) => Err("must be more than 0 and at most 3600".into()),
        Err(error) => Err(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn messages_are_checked_before_use() {
        assert!(check_message("chamber pressure out of range").is_ok());
        assert!(check_message(" \n").is_err());
        assert!(check_message("a\0b").is_err());
        assert!(check_message(&"x".repeat(MAX_DESCRIPTION_CHARS + 1)).is_err());
        assert!(check_message(&"é".repeat(MAX_DESCRIPTION_CHARS)).is_ok());
    }
}

/// The options of `watch`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// Time between two audits, e.g. `30s`, `5m`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_interval)]
    pub(crate) interval: Duration,

    /// A machine processing for longer than this is counted as stuck, e.g.
    /// `90m`, `2h 30m`.
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = humantime::parse_duration)]
    pub(crate) stuck_after: Duration,

    /// Serve the numbers as Prometheus text on this address
    /// (`127.0.0.1:9187`; port 0 picks a free port), on any path. The
    /// address served is printed first.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<SocketAddr>,

    /// Stop after this many audits [default: run until Ctrl-C or SIGTERM].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,
}

/// A positive duration.
fn parse_interval(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be more than 0".into()),
        Ok(duration) => Ok(duration),
        Err(error) => Err(error.to_string()),
    }
}
