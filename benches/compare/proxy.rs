//! A delay proxy: a unix socket of its own that forwards every connection to
//! the server's socket, holding each chunk `one_way` before passing it on, in
//! both directions. A request and its reply then take about `2 × one_way`
//! more: a network round trip, inside this process.
//!
//! libpq and pgbench reach it as a server: `host=<socket_dir>`, port 5432.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The socket file of a server on port 5432 in a directory.
const SOCKET: &str = ".s.PGSQL.5432";

pub struct DelayProxy {
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl DelayProxy {
    /// Listen in a new private directory; forward to the server whose socket
    /// is in `server_socket_dir`.
    pub fn start(server_socket_dir: &Path, one_way: Duration) -> Result<DelayProxy, String> {
        let dir = tempfile::Builder::new()
            .prefix("machine-state-proxy-")
            .tempdir()
            .map_err(|e| format!("cannot create the proxy's directory: {e}"))?;
        let listener = UnixListener::bind(dir.path().join(SOCKET))
            .map_err(|e| format!("cannot listen on the proxy's socket: {e}"))?;
        let target: PathBuf = server_socket_dir.join(SOCKET);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let accept = thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                // A client the server cannot take is dropped: it sees the
                // connection close, as it would without the proxy.
                let Ok(server) = UnixStream::connect(&target) else {
                    continue;
                };
                let (Ok(client_in), Ok(server_in)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                thread::spawn(move || pump(client_in, server, one_way));
                thread::spawn(move || pump(server_in, client, one_way));
            }
        });
        Ok(DelayProxy {
            dir,
            stop,
            accept: Some(accept),
        })
    }

    /// The directory of the proxy's socket (libpq's `host`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A libpq URL for `database` through the proxy, as `postgres`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://postgres@/{database}?host={}&port=5432",
            self.socket_dir().display()
        )
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = UnixStream::connect(self.dir.path().join(SOCKET));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Copy `from` to `to`, each chunk `delay` late, until `from` ends; then end
/// `to`'s writing side, so the other end sees the close.
fn pump(mut from: UnixStream, mut to: UnixStream, delay: Duration) {
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                thread::sleep(delay);
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
