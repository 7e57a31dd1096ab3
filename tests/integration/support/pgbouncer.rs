//! A real PgBouncer (Debian's package) in transaction mode in front of a
//! server of ours, started by the test (or bench) that needs it and stopped
//! when it is dropped (a panicking test unwinds through the drop; should the test's
//! thread die otherwise, the kernel's parent-death signal stops it).
//!
//! It listens on a unix socket in a private directory (no TCP port, so it
//! cannot meet another server) and runs as an unprivileged user when we are
//! root (PgBouncer refuses root, like `initdb`). Its pool is tiny
//! (`default_pool_size = 2` per database and user), so clients share server
//! connections and any session state one leaves behind reaches the others.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid, User, chown};

/// The number in the socket's name (`.s.PGSQL.6432`); no TCP port is opened.
const PORT: u16 = 6432;

/// A running PgBouncer, stopped on drop.
pub(crate) struct PgBouncer {
    dir: tempfile::TempDir,
    child: Child,
}

impl PgBouncer {
    /// Start one in front of the server listening in `server_socket` for
    /// `users` (besides `postgres`), trusting them (as our servers trust
    /// local users).
    pub(crate) fn start(server_socket: &Path, users: &[&str]) -> Result<PgBouncer, String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("pgbouncer: {what}: {e}");
        let dir = tempfile::Builder::new()
            .prefix("machine-state-pgbouncer-")
            .tempdir()
            .map_err(|e| fail("cannot create its directory", &e))?;
        let run_as = if Uid::effective().is_root() {
            let user = User::from_name("postgres")
                .ok()
                .flatten()
                .or_else(|| User::from_name("nobody").ok().flatten())
                .ok_or("pgbouncer: no unprivileged user to run it as")?;
            chown(dir.path(), Some(user.uid), Some(user.gid))
                .map_err(|e| fail("cannot hand its directory over", &e))?;
            Some(user)
        } else {
            None
        };
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
            .map_err(|e| fail("cannot protect its directory", &e))?;
        let userlist: String = std::iter::once("postgres")
            .chain(users.iter().copied())
            .map(|user| format!("\"{user}\" \"\"\n"))
            .collect();
        fs::write(dir.path().join("userlist.txt"), userlist)
            .map_err(|e| fail("cannot write its user list", &e))?;
        let config = format!(
            "[databases]\n\
             * = host={server_socket} port=5432\n\
             [pgbouncer]\n\
             unix_socket_dir = {dir}\n\
             listen_port = {PORT}\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             default_pool_size = 2\n\
             max_client_conn = 500\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {dir}/pgbouncer.log\n\
             admin_users = postgres\n",
            server_socket = server_socket.display(),
            dir = dir.path().display(),
        );
        let ini = dir.path().join("pgbouncer.ini");
        fs::write(&ini, config).map_err(|e| fail("cannot write its configuration", &e))?;
        let mut command = Command::new(binary()?);
        command
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(user) = &run_as {
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        // SAFETY: `prctl` is async-signal-safe and allocates nothing.
        #[expect(
            unsafe_code,
            reason = "the parent-death signal is set in the child, between fork and exec"
        )]
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().map_err(|e| fail("cannot start it", &e))?;
        let bouncer = PgBouncer { dir, child };
        bouncer.wait_until_ready()?;
        Ok(bouncer)
    }

    fn wait_until_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = self.url("postgres");
        while PgConnection::establish(&url).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "pgbouncer did not accept connections; its log:\n{}",
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Its admin console's `SHOW STATS` row for `database`, by `psql` (the
    /// console speaks the simple protocol only): (transactions, statements)
    /// so far. Each statement is one round trip through the pooler.
    pub(crate) fn stats(&self, psql: &Path, database: &str) -> Result<(u64, u64), String> {
        let output = Command::new(psql)
            .args(["-X", "-A", "-t", "-F", ",", "-c", "SHOW STATS"])
            .arg(self.url("pgbouncer"))
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let row = stdout
            .lines()
            .find(|line| line.starts_with(&format!("{database},")))
            .ok_or_else(|| format!("no pgbouncer stats for `{database}`: {stdout}"))?;
        // database, total_xact_count, total_query_count, ...
        let field = |n: usize| -> Result<u64, String> {
            row.split(',')
                .nth(n)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| format!("unexpected pgbouncer stats: {row}"))
        };
        Ok((field(1)?, field(2)?))
    }

    /// A libpq URL for `database` through the pooler, as `postgres`.
    pub(crate) fn url(&self, database: &str) -> String {
        self.url_as("postgres", database)
    }

    /// A libpq URL for `database` through the pooler, as `user`.
    pub(crate) fn url_as(&self, user: &str, database: &str) -> String {
        format!(
            "postgresql://{user}@/{database}?host={}&port={PORT}",
            self.dir.path().display()
        )
    }

    /// The same with this crate's pooler switch.
    pub(crate) fn crate_url(&self, database: &str) -> String {
        format!("{}&machine_state_pooler=transaction", self.url(database))
    }

    /// Its log so far.
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // SIGTERM: immediate shutdown; then SIGKILL if it lingers.
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's `pgbouncer`, from `PATH` or `/usr/sbin`.
fn binary() -> Result<PathBuf, String> {
    let in_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("pgbouncer"))
            .find(|candidate| candidate.is_file())
    });
    in_path
        .or_else(|| Some(Path::new("/usr/sbin/pgbouncer").to_path_buf()).filter(|p| p.is_file()))
        .ok_or_else(|| {
            "pgbouncer is not installed (Debian: `apt-get install pgbouncer`; .ci/run does)".into()
        })
}
