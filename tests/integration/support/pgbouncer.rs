//! A real PgBouncer (Debian's package) in transaction mode in front of the
//! test server, started by the test that needs it and stopped when it is
//! dropped (a panicking test unwinds through the drop; should the test's
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

use super::server;

/// The number in the socket's name (`.s.PGSQL.6432`); no TCP port is opened.
const PORT: u16 = 6432;

/// A running PgBouncer, stopped on drop.
pub struct PgBouncer {
    dir: tempfile::TempDir,
    child: Child,
}

impl PgBouncer {
    /// Start one in front of the test server for `users` (besides
    /// `postgres`), trusting them (the test server trusts local users too).
    pub fn start(users: &[&str]) -> PgBouncer {
        let dir = tempfile::Builder::new()
            .prefix("machine-state-pgbouncer-")
            .tempdir()
            .unwrap();
        let run_as = if Uid::effective().is_root() {
            let user = User::from_name("postgres")
                .unwrap()
                .or_else(|| User::from_name("nobody").unwrap())
                .expect("an unprivileged user to run pgbouncer as");
            chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
            Some(user)
        } else {
            None
        };
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let userlist: String = std::iter::once("postgres")
            .chain(users.iter().copied())
            .map(|user| format!("\"{user}\" \"\"\n"))
            .collect();
        fs::write(dir.path().join("userlist.txt"), userlist).unwrap();
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
            server_socket = server().socket_dir().display(),
            dir = dir.path().display(),
        );
        let ini = dir.path().join("pgbouncer.ini");
        fs::write(&ini, config).unwrap();
        let mut command = Command::new(binary());
        command
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(user) = &run_as {
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        // SAFETY: `prctl` is async-signal-safe and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().unwrap();
        let bouncer = PgBouncer { dir, child };
        bouncer.wait_until_ready();
        bouncer
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = self.url("postgres");
        while PgConnection::establish(&url).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not accept connections; its log:\n{}",
                fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A libpq URL for `database` through the pooler, as `postgres`.
    pub fn url(&self, database: &str) -> String {
        self.url_as("postgres", database)
    }

    /// A libpq URL for `database` through the pooler, as `user`.
    pub fn url_as(&self, user: &str, database: &str) -> String {
        format!(
            "postgresql://{user}@/{database}?host={}&port={PORT}",
            self.dir.path().display()
        )
    }

    /// The same with this crate's pooler switch.
    pub fn crate_url(&self, database: &str) -> String {
        format!("{}&machine_state_pooler=transaction", self.url(database))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
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
fn binary() -> PathBuf {
    let in_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("pgbouncer"))
            .find(|candidate| candidate.is_file())
    });
    in_path
        .or_else(|| Some(Path::new("/usr/sbin/pgbouncer").to_path_buf()).filter(|p| p.is_file()))
        .expect("pgbouncer is not installed (Debian: `apt-get install pgbouncer`; .ci/run does)")
}
