//! A PostgreSQL server of our own, started from the binaries on this machine,
//! for development, tests, benches and the command line's default database.
//!
//! - The binaries are found through `MACHINE_STATE_PG_BINDIR`, `PATH`,
//!   `pg_config --bindir`, or the newest `/usr/lib/postgresql/*/bin`.
//! - As root (which `initdb` refuses), the server runs as the unprivileged
//!   user `postgres` (or `nobody` when there is none).
//! - It listens on a unix socket in a private directory of its own and on no
//!   TCP port, so it never meets another server on this machine.
//! - It stops on [`EmbeddedPostgres::stop`] or drop; should this process end
//!   without stopping it (a server kept in a `static`, a crash), a janitor
//!   process stops it and removes its throwaway directory, so neither a
//!   server nor a directory is left behind.

mod janitor;
mod launch;
mod supervise;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::thread::{self};
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection};

use crate::error::Error;
use janitor::Janitor;
use launch::{
    Launch, base_backup, find_bin_dir, give_to_server_user, init_cluster, unprivileged_user,
};
use supervise::{Signal, Supervisor, spawn_owner};

/// The port number in the socket's file name. The server has no TCP
/// listener, and the socket lives in a directory of its own, so this number
/// cannot collide with another server.
const SOCKET_PORT: u16 = 5432;

/// The default data directory, relative to the current directory.
const DEFAULT_DATA_DIR: &str = ".machine-state/pgdata";

/// Where default data goes when the server's user cannot reach
/// [`DEFAULT_DATA_DIR`].
const UNREACHABLE_FALLBACK: &str = "/var/lib/machine-state";

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a fast shutdown may take before an immediate one.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// What came of waiting for the server to accept connections.
enum Ready {
    Yes,
    Exited,
    TimedOut,
}

/// A running PostgreSQL server that this process started and owns.
pub struct EmbeddedPostgres {
    data_dir: PathBuf,
    socket_dir: PathBuf,
    bin_dir: PathBuf,
    /// How to run `postgres` again on [`EmbeddedPostgres::restart`].
    launch: Launch,
    owner: Mutex<Option<Supervisor>>,
    /// The throwaway directory (data and socket), or the socket directory of
    /// a persistent server; removed once the server has stopped.
    scratch: Mutex<Option<tempfile::TempDir>>,
    /// Stops the server and removes `scratch` if this process ends first.
    janitor: Mutex<Option<Janitor>>,
}

/// Options for [`EmbeddedPostgres`]; start with [`EmbeddedPostgres::builder`].
#[derive(Clone, Debug, Default)]
pub struct Builder {
    data_dir: Option<PathBuf>,
    durable: bool,
    settings: Vec<(String, String)>,
    /// The socket directory of the primary to copy, for a standby.
    standby_of: Option<PathBuf>,
}

impl Builder {
    /// Keep the cluster in `dir` (created and initialised when missing, reused
    /// otherwise). Defaults to a throwaway directory removed on stop.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Whether commits are durable (`fsync`, `synchronous_commit`). Defaults
    /// to false for a throwaway cluster; a persistent one is always durable.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Add a server setting (`-c name=value`), e.g. `("max_connections", "300")`.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Make the server a streaming-replication standby of `primary`: its
    /// cluster is a base backup of the primary (`pg_basebackup -R`, which
    /// writes `primary_conninfo` and `standby.signal`) instead of a new one.
    /// It accepts read-only connections once it has caught up;
    /// [`EmbeddedPostgres::promote`] makes it a primary. For failover tests.
    pub fn standby_of(mut self, primary: &EmbeddedPostgres) -> Self {
        self.standby_of = Some(primary.socket_dir.clone());
        self
    }

    /// Initialise (if needed) and start the server; returns once it accepts
    /// connections.
    ///
    /// # Errors
    ///
    /// [`Error::Server`] naming what to install when no binaries are found,
    /// or quoting the server's log when it does not start.
    pub fn start(self) -> Result<EmbeddedPostgres, Error> {
        EmbeddedPostgres::start(self)
    }
}

impl EmbeddedPostgres {
    /// Options for a new server.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Start a throwaway server (not durable; its directory is removed on
    /// stop).
    ///
    /// # Errors
    ///
    /// As [`Builder::start`].
    pub fn start_temporary() -> Result<EmbeddedPostgres, Error> {
        Builder::default().start()
    }

    fn start(options: Builder) -> Result<EmbeddedPostgres, Error> {
        let bin_dir = find_bin_dir()?;
        let run_as = unprivileged_user()?;
        let scratch = tempfile::Builder::new()
            .prefix("machine-state-pg-")
            .tempdir()
            .map_err(|e| server_error("cannot create a temporary directory", e))?;
        give_to_server_user(scratch.path(), run_as)?;
        let socket_dir = scratch.path().to_path_buf();
        let durable = options.durable || options.data_dir.is_some();
        let data_dir = match options.data_dir {
            Some(dir) => absolute(&dir)?,
            None => scratch.path().join("data"),
        };
        if !data_dir.join("PG_VERSION").exists() {
            match &options.standby_of {
                Some(primary) => base_backup(&bin_dir, &data_dir, primary, run_as)?,
                None => init_cluster(&bin_dir, &data_dir, run_as, durable)?,
            }
        }
        let mut args: Vec<OsString> = vec!["-D".into(), data_dir.clone().into()];
        args.extend(["-k".into(), socket_dir.clone().into()]);
        args.extend(["-p".into(), SOCKET_PORT.to_string().into()]);
        args.extend(["-c".into(), "listen_addresses=".into()]);
        if !durable {
            for setting in [
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
            ] {
                args.extend(["-c".into(), setting.into()]);
            }
        }
        for (name, value) in &options.settings {
            args.extend(["-c".into(), format!("{name}={value}").into()]);
        }
        let launch = Launch {
            program: bin_dir.join("postgres"),
            args,
            run_as,
            log_path: socket_dir.join("postgres.log"),
            socket_dir: socket_dir.clone(),
        };
        File::create(&launch.log_path).map_err(|e| server_error("cannot create the log", e))?;
        let janitor = Janitor::start(scratch.path(), &data_dir)?;
        let exited = Arc::new(Mutex::new(None));
        let owner = spawn_owner(launch.command()?, Arc::clone(&exited))?;
        let server = EmbeddedPostgres {
            data_dir,
            socket_dir,
            bin_dir,
            launch,
            owner: Mutex::new(Some(owner)),
            scratch: Mutex::new(Some(scratch)),
            janitor: Mutex::new(Some(janitor)),
        };
        server.wait_until_ready(&exited)?;
        Ok(server)
    }

    fn wait_until_ready(&self, exited: &Mutex<Option<ExitStatus>>) -> Result<(), Error> {
        match self.poll_ready(exited, Instant::now() + START_TIMEOUT) {
            Ready::Yes => Ok(()),
            _ => self.failed_to_start(exited),
        }
    }

    /// Wait until the server accepts connections, exits, or `deadline`.
    fn poll_ready(&self, exited: &Mutex<Option<ExitStatus>>, deadline: Instant) -> Ready {
        loop {
            if PgConnection::establish(&self.url("postgres")).is_ok() {
                return Ready::Yes;
            }
            if exited.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                return Ready::Exited;
            }
            if Instant::now() > deadline {
                return Ready::TimedOut;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop what is left and report why the server did not start.
    fn failed_to_start(&self, exited: &Mutex<Option<ExitStatus>>) -> Result<(), Error> {
        let why = match *exited.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(status) => format!("the server exited ({status})"),
            None => format!("the server did not accept connections in {START_TIMEOUT:?}"),
        };
        // Read the log before `stop` removes the directory holding it.
        let log = tail(&self.launch.log_path);
        let _ = self.stop();
        Err(Error::Server(format!("{why}; its log ends with:\n{log}")))
    }

    /// The embedded database's default data directory:
    /// `.machine-state/pgdata` in the current directory, which the command
    /// line and the examples share.
    ///
    /// As root, the server runs as an unprivileged user, which cannot reach a
    /// directory under a private one (a clone in `/root`, mode 0700). The
    /// data then goes to `/var/lib/machine-state/<directory name>-<hash of
    /// its path>/pgdata`, the same for every run from that directory.
    ///
    /// # Errors
    ///
    /// [`Error::Server`] when the current directory cannot be resolved.
    pub fn default_data_dir() -> Result<PathBuf, Error> {
        let default = absolute(Path::new(DEFAULT_DATA_DIR))?;
        if Self::blocked_by(&default).is_none() {
            return Ok(default);
        }
        let home = default
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/"));
        let name = home
            .file_name()
            .map_or_else(|| "root".into(), |n| n.to_string_lossy());
        let fallback = Path::new(UNREACHABLE_FALLBACK)
            .join(format!(
                "{name}-{:016x}",
                fnv1a(home.as_os_str().as_bytes())
            ))
            .join("pgdata");
        tracing::info!(
            data_dir = %fallback.display(),
            unreachable = %default.display(),
            "the server's user cannot reach the default data directory; using another"
        );
        Ok(fallback)
    }

    /// As root (the server then runs as an unprivileged user): the first
    /// existing ancestor of `path` that others cannot search, which keeps the
    /// server from using `path`. `None` when there is none, or when not root.
    pub fn blocked_by(path: &Path) -> Option<PathBuf> {
        if !launch::running_as_root() {
            return None;
        }
        path.ancestors()
            .skip(1)
            .filter_map(|dir| Some((dir, fs::metadata(dir).ok()?)))
            .find(|(_, metadata)| metadata.permissions().mode() & 0o001 == 0)
            .map(|(dir, _)| dir.to_path_buf())
    }

    /// A libpq URL for `database` on this server, as the superuser
    /// `postgres`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://postgres@/{database}?host={}&port={SOCKET_PORT}",
            self.socket_dir.display()
        )
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The directory of the PostgreSQL binaries in use (`pgbench`, `psql`
    /// and friends are there too).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Stop the server (fast shutdown: sessions are disconnected, the data
    /// is kept consistent), wait for it to exit, and remove the throwaway
    /// directory. Calling it again does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Server`] when the directory cannot be removed.
    pub fn stop(&self) -> Result<(), Error> {
        let owner = self.owner.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(owner) = owner {
            let _ = owner.stop.send(Signal::Interrupt);
            let _ = owner.thread.join();
        }
        let scratch = self
            .scratch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let removed = scratch.map_or(Ok(()), |scratch| {
            scratch
                .close()
                .map_err(|e| server_error("cannot remove the server's directory", e))
        });
        let janitor = self
            .janitor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(janitor) = janitor {
            janitor.dismiss();
        }
        removed
    }
}

impl EmbeddedPostgres {
    /// Stop the server *immediately*, as a crash would (SIGQUIT: every session
    /// is cut mid-flight, no shutdown checkpoint), and start it again on the
    /// same data directory and socket, so every [`url`](Self::url) stays
    /// valid. Returns once it accepts connections again, after crash
    /// recovery. For fault-injection tests.
    ///
    /// Every acknowledged commit survives only on a [durable](Builder::durable)
    /// server: a throwaway one commits asynchronously.
    ///
    /// # Errors
    ///
    /// [`Error::Server`] when the server was stopped, or does not come back
    /// (quoting its log).
    pub fn restart(&self) -> Result<(), Error> {
        self.crash(Signal::Quit)?;
        self.start_again()
    }

    /// Stop the server immediately (`pg_ctl stop -m immediate`: SIGQUIT),
    /// keeping its directories, so that [`start_again`](Self::start_again)
    /// can bring it back. For failover and outage tests.
    ///
    /// # Errors
    ///
    /// [`Error::Server`] when the server was not running.
    pub fn stop_immediately(&self) -> Result<(), Error> {
        self.crash(Signal::Quit)
    }

    /// Kill the postmaster (SIGKILL), as the kernel's OOM killer would,
    /// keeping the directories; its backends notice and exit on their own.
    /// For outage tests; [`start_again`](Self::start_again) brings it back.
    ///
    /// # Errors
    ///
    /// [`Error::Server`] when the server was not running.
    pub fn kill(&self) -> Result<(), Error> {
        self.crash(Signal::Kill)
    }

    fn crash(&self, signal: Signal) -> Result<(), Error> {
        let running = self
            .owner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| Error::Server("the server is not running".into()))?;
        let _ = running.stop.send(signal);
        let _ = running.thread.join();
        Ok(())
    }

    /// Start the server again after [`stop_immediately`](Self::stop_immediately)
    /// or [`kill`](Self::kill), on the same data directory and socket; returns
    /// once it accepts connections (after crash recovery). While the killed
    /// postmaster's backends linger, the server refuses to start: it is tried
    /// again for up to 60 s.
    ///
    /// # Errors
    ///
    /// [`Error::Server`] when it is running, was stopped for good, or does
    /// not come back (quoting its log).
    pub fn start_again(&self) -> Result<(), Error> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = Arc::new(Mutex::new(None));
            {
                let mut owner = self.owner.lock().unwrap_or_else(|e| e.into_inner());
                if owner.is_some() {
                    return Err(Error::Server("the server is running".into()));
                }
                if self
                    .scratch
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none()
                {
                    return Err(Error::Server("the server was stopped".into()));
                }
                *owner = Some(spawn_owner(self.launch.command()?, Arc::clone(&exited))?);
            }
            match self.poll_ready(&exited, deadline) {
                Ready::Yes => return Ok(()),
                Ready::Exited if Instant::now() < deadline => {
                    // Reap the exited owner before trying again.
                    let _ = self.crash(Signal::Interrupt);
                    thread::sleep(Duration::from_millis(50));
                }
                _ => return self.failed_to_start(&exited),
            }
        }
    }

    /// Promote a [standby](Builder::standby_of) to a primary (`pg_promote`),
    /// waiting until it accepts writes.
    ///
    /// # Errors
    ///
    /// [`Error::Server`] when it cannot be reached or does not promote
    /// within a minute.
    pub fn promote(&self) -> Result<(), Error> {
        use diesel::RunQueryDsl;
        let conn = &mut PgConnection::establish(&self.url("postgres"))?;
        let promoted: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
            "pg_promote(true, 60)",
        ))
        .get_result(conn)?;
        if promoted {
            Ok(())
        } else {
            Err(Error::Server("the standby did not promote in 60 s".into()))
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl std::fmt::Debug for EmbeddedPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedPostgres")
            .field("data_dir", &self.data_dir)
            .field("socket_dir", &self.socket_dir)
            .finish_non_exhaustive()
    }
}

fn absolute(dir: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(dir).map_err(|e| server_error("cannot resolve the data directory", e))
}

fn server_error(what: &str, error: std::io::Error) -> Error {
    Error::Server(format!("{what}: {error}"))
}

/// The last lines of the server log.
fn tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(2000)));
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// A hash that stays the same across builds (FNV-1a, 64 bits).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
