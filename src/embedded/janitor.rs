//! The janitor: a small `sh` process that stops the server and removes its
//! throwaway directory when the process that started it is gone, however
//! that process ended. A server kept in a `static` (as a test binary keeps
//! it) is never dropped, so neither its process nor its directory would go
//! otherwise. The script is `janitor.sh`; it learns that this process is
//! gone when its standard input, a pipe whose other end only this process
//! holds, closes.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::error::Error;

use super::server_error;

/// The running janitor; [`Janitor::dismiss`] ends it once the server was
/// stopped and its directory removed the ordinary way.
pub(super) struct Janitor {
    child: Child,
}

impl Janitor {
    /// Start the janitor of the server whose data directory is `data_dir`,
    /// to remove `scratch` (the throwaway directory: the data and socket, or
    /// the socket alone of a persistent server).
    pub(super) fn start(scratch: &Path, data_dir: &Path) -> Result<Janitor, Error> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(include_str!("janitor.sh"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C in the terminal stops us, not
            // the janitor that must clean up after us.
            .process_group(0)
            .spawn()
            .map_err(|e| server_error("cannot start the server's janitor (`sh`)", e))?;
        let mut told = Vec::new();
        for path in [scratch, &data_dir.join("postmaster.pid")] {
            told.extend_from_slice(path.as_os_str().as_bytes());
            told.push(b'\n');
        }
        let sent = child
            .stdin
            .as_mut()
            .map(|stdin| stdin.write_all(&told).and_then(|()| stdin.flush()));
        match sent {
            Some(Ok(())) => Ok(Janitor { child }),
            Some(Err(e)) => Err(server_error("cannot brief the server's janitor", e)),
            None => Err(Error::Server("the janitor has no standard input".into())),
        }
    }

    /// The server is stopped and its directory gone: let the janitor look
    /// (it finds nothing to do) and wait for it to exit.
    pub(super) fn dismiss(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
