//! Launching a server: the binaries, the unprivileged user, `initdb` or a
//! base backup, and the `postgres` command line.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::Error;

use super::*;

/// The `postgres` command line, kept to start the server again.
pub(super) struct Launch {
    pub(super) program: PathBuf,
    pub(super) args: Vec<OsString>,
    pub(super) run_as: Option<ServerUser>,
    pub(super) socket_dir: PathBuf,
    pub(super) log_path: PathBuf,
}

impl Launch {
    /// The command, its output appended to the log.
    pub(super) fn command(&self) -> Result<Command, Error> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| server_error("cannot open the log", e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| server_error("cannot open the log", e))?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .current_dir(&self.socket_dir);
        as_user(&mut command, self.run_as);
        Ok(command)
    }
}

pub(super) fn init_cluster(
    bin_dir: &Path,
    data_dir: &Path,
    run_as: Option<ServerUser>,
    durable: bool,
) -> Result<(), Error> {
    fs::create_dir_all(data_dir)
        .map_err(|e| server_error("cannot create the data directory", e))?;
    fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| server_error("cannot set the data directory's mode", e))?;
    give_to_server_user(data_dir, run_as)?;
    let mut command = Command::new(bin_dir.join("initdb"));
    command
        .arg("-D")
        .arg(data_dir)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
        .current_dir(data_dir)
        .stdin(Stdio::null());
    if !durable {
        command.arg("--no-sync");
    }
    as_user(&mut command, run_as);
    let output = command
        .output()
        .map_err(|e| server_error("cannot run `initdb`", e))?;
    if !output.status.success() {
        return Err(Error::Server(format!(
            "`initdb` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// Copy the cluster of the primary listening in `primary_socket` into
/// `data_dir`, as a standby (`pg_basebackup -R`: `primary_conninfo` and
/// `standby.signal` written).
pub(super) fn base_backup(
    bin_dir: &Path,
    data_dir: &Path,
    primary_socket: &Path,
    run_as: Option<ServerUser>,
) -> Result<(), Error> {
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(parent).map_err(|e| server_error("cannot create the data directory", e))?;
    let mut command = Command::new(bin_dir.join("pg_basebackup"));
    command
        .arg("-D")
        .arg(data_dir)
        .args(["-R", "-X", "stream", "-c", "fast", "-U", "postgres", "-h"])
        .arg(primary_socket)
        .args(["-p", &SOCKET_PORT.to_string()])
        .current_dir(parent)
        .stdin(Stdio::null());
    as_user(&mut command, run_as);
    let output = command
        .output()
        .map_err(|e| server_error("cannot run `pg_basebackup`", e))?;
    if !output.status.success() {
        return Err(Error::Server(format!(
            "`pg_basebackup` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// Find the directory of `initdb` and `postgres`.
pub(super) fn find_bin_dir() -> Result<PathBuf, Error> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("MACHINE_STATE_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(Error::Server(format!(
                "`MACHINE_STATE_PG_BINDIR` ({}) has no `initdb` and `postgres`",
                dir.display()
            )))
        };
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(dir) = on_path.into_iter().find(|dir| has_server(dir)) {
        // PATH often holds symlinks (/usr/local/bin/initdb -> ...): use the
        // real directory, where `pgbench`, `psql` and friends are too.
        let real = fs::canonicalize(dir.join("initdb"))
            .ok()
            .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
            .filter(|real| has_server(real));
        return Ok(real.unwrap_or(dir));
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let dir = entry.path().join("bin");
            has_server(&dir).then_some((version, dir))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir).ok_or_else(|| {
        Error::Server(
            "no PostgreSQL server binaries found (looked for `initdb` and `postgres` in \
             `MACHINE_STATE_PG_BINDIR`, PATH, `pg_config --bindir` and \
             /usr/lib/postgresql/*/bin): install them, e.g. `apt-get install postgresql`, \
             or pass a server with `--database-url`"
                .into(),
        )
    })
}

/// The user and group ids the server runs as.
pub(super) type ServerUser = (u32, u32);

/// Whether this process runs as root (effective user id 0, as
/// `/proc/self/status` says).
pub(super) fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The user and group ids of the user `name` (`getent passwd`).
fn lookup_user(name: &str) -> Option<ServerUser> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .output()
        .ok()?;
    let entry = String::from_utf8(out.stdout).ok()?;
    let mut fields = entry.trim_end().split(':').skip(2);
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some((uid, gid))
}

/// The user to run the server as: `None` (ourselves) unless we are root.
pub(super) fn unprivileged_user() -> Result<Option<ServerUser>, Error> {
    if !running_as_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Some(user) = lookup_user(name) {
            return Ok(Some(user));
        }
    }
    Err(Error::Server(
        "running as root, and `initdb` refuses root, but there is no `postgres` or `nobody` \
         user to run the server as: create one (`useradd --system postgres`)"
            .into(),
    ))
}

pub(super) fn as_user(command: &mut Command, run_as: Option<ServerUser>) {
    if let Some((uid, gid)) = run_as {
        command.uid(uid).gid(gid);
    }
}

/// Give a directory to the server's user.
pub(super) fn give_to_server_user(dir: &Path, run_as: Option<ServerUser>) -> Result<(), Error> {
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| {
            server_error(
                &format!("cannot hand {} to the server's user", dir.display()),
                e,
            )
        })?;
    }
    Ok(())
}
