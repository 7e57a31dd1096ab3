//! A tiny TCP proxy in front of the test server's unix socket that can lose
//! the reply to one request, or drop the request itself, and cut the
//! connection: what a network failure does at the worst moment.
//!
//! It reads the frontend/backend protocol just enough to find message
//! boundaries: the client's startup packet (untyped), then typed messages
//! (`type: u8, length: i32 including itself, body`) both ways. Connect with
//! `sslmode=disable` and `gssencmode=disable` ([`Proxy::url`]) so that no
//! untyped one-byte answers cross it.
//!
//! A fault is armed for the next matching request on any connection, so arm
//! it only while a single connection is busy.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// Which request a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum At {
    /// The next statement run with the extended protocol (the messages up to
    /// the `Sync` after an `Execute`): on a session in autocommit, the
    /// statement is its own transaction and commits at that `Sync`.
    Statement,
    /// The next such statement run after one whose text (its `Parse`
    /// message) contains this was prepared on the connection: the one
    /// statement of a transition (`applied.sql`) among the others a command
    /// runs before it (libpq prepares in one request and executes in the
    /// next).
    StatementWith(&'static str),
    /// The next simple-protocol `COMMIT` (how diesel ends a transaction).
    Commit,
}

/// What the fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Forward the request, let the server finish it (up to its
    /// `ReadyForQuery`), swallow the reply and cut the connection: the
    /// client never learns that it committed.
    LoseReply,
    /// Cut the connection instead of forwarding the request: it never
    /// reaches the server.
    DropRequest,
}

#[derive(Default)]
struct Shared {
    armed: Mutex<Option<(At, Fault)>>,
    fired: AtomicBool,
    stopping: AtomicBool,
}

impl Shared {
    /// Disarm if `at` is what is armed, returning the fault.
    fn take(&self, at: At) -> Option<Fault> {
        let mut armed = self.armed.lock().unwrap();
        match *armed {
            Some((armed_at, fault)) if armed_at == at => {
                *armed = None;
                Some(fault)
            }
            _ => None,
        }
    }

    fn armed_at(&self) -> Option<At> {
        self.armed.lock().unwrap().map(|(at, _)| at)
    }
}

/// The proxy: listens on 127.0.0.1, forwards to the server's unix socket.
pub(crate) struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listen on a free port of 127.0.0.1 and forward every connection to
    /// the unix socket `socket`.
    pub(crate) fn start(socket: PathBuf) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (socket, shared) = (socket.clone(), Arc::clone(&accepting));
                thread::spawn(move || {
                    // A connection that breaks is the point of this proxy.
                    let _ = serve(client, &socket, &shared);
                });
            }
        });
        Proxy { addr, shared }
    }

    /// A URL for `database` through the proxy.
    pub(crate) fn url(&self, database: &str) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/{database}?sslmode=disable&gssencmode=disable",
            self.addr.port()
        )
    }

    /// Apply `fault` to the next request that matches `at`.
    pub(crate) fn arm(&self, at: At, fault: Fault) {
        self.shared.fired.store(false, Ordering::SeqCst);
        *self.shared.armed.lock().unwrap() = Some((at, fault));
    }

    /// Whether the armed fault has been applied.
    pub(crate) fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accepting thread so that it sees `stopping`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Read one message: typed (`tag, length, body`) or, for the startup packet,
/// untyped (`length, body`). `None` at end of stream.
fn read_message(stream: &mut impl Read, typed: bool) -> io::Result<Option<Vec<u8>>> {
    let header = if typed { 5 } else { 4 };
    let mut message = vec![0; header];
    match stream.read_exact(&mut message) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = u32::from_be_bytes(message[header - 4..header].try_into().unwrap()) as usize;
    if length < 4 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad length"));
    }
    message.resize(header - 4 + length, 0);
    stream.read_exact(&mut message[header..])?;
    Ok(Some(message))
}

fn cut(client: &TcpStream, server: &UnixStream) {
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

/// Relay one connection; the calling thread carries client → server, a
/// second one server → client.
fn serve(mut client: TcpStream, socket: &Path, shared: &Arc<Shared>) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut server = UnixStream::connect(socket)?;
    let swallow = Arc::new(AtomicBool::new(false));
    {
        let (mut from, mut to) = (server.try_clone()?, client.try_clone()?);
        let (swallow, shared) = (Arc::clone(&swallow), Arc::clone(shared));
        thread::spawn(move || -> io::Result<()> {
            while let Some(message) = read_message(&mut from, true)? {
                if !swallow.load(Ordering::SeqCst) {
                    to.write_all(&message)?;
                } else if message[0] == b'Z' {
                    // The server has finished the request (committed, in
                    // autocommit or at `COMMIT`); the client never hears.
                    shared.fired.store(true, Ordering::SeqCst);
                    cut(&to, &from);
                    return Ok(());
                }
            }
            let _ = to.shutdown(Shutdown::Both);
            Ok(())
        });
    }
    let Some(startup) = read_message(&mut client, false)? else {
        return Ok(());
    };
    server.write_all(&startup)?;
    // Messages held back while a `DropRequest` at a statement is armed,
    // until it is clear whether they belong to the statement.
    let mut held: Vec<Vec<u8>> = Vec::new();
    // Whether the statement an `At::StatementWith` waits for was prepared.
    let mut prepared = false;
    while let Some(message) = read_message(&mut client, true)? {
        if let Some(At::StatementWith(text)) = shared.armed_at() {
            prepared |=
                message[0] == b'P' && message.windows(text.len()).any(|w| w == text.as_bytes());
        }
        let tag = message[0];
        let is_commit = tag == b'Q' && message[5..].to_ascii_uppercase().starts_with(b"COMMIT");
        // Parse, Bind, Describe, Execute, Close: answered only at `Sync`.
        let extended = matches!(tag, b'P' | b'B' | b'D' | b'E' | b'C');
        let hit = match shared.armed_at() {
            Some(At::Commit) if is_commit => shared.take(At::Commit),
            Some(At::Statement | At::StatementWith(_)) if extended => {
                held.push(message);
                continue;
            }
            Some(At::Statement) if tag == b'S' && held.iter().any(|m| m[0] == b'E') => {
                shared.take(At::Statement)
            }
            Some(At::StatementWith(text))
                if prepared && tag == b'S' && held.iter().any(|m| m[0] == b'E') =>
            {
                shared.take(At::StatementWith(text))
            }
            _ => None,
        };
        match hit {
            Some(Fault::LoseReply) => {
                swallow.store(true, Ordering::SeqCst);
                for earlier in held.drain(..) {
                    server.write_all(&earlier)?;
                }
                server.write_all(&message)?;
                // The reply thread cuts both ends after `ReadyForQuery`.
                return Ok(());
            }
            Some(Fault::DropRequest) => {
                shared.fired.store(true, Ordering::SeqCst);
                cut(&client, &server);
                return Ok(());
            }
            None => {
                for earlier in held.drain(..) {
                    server.write_all(&earlier)?;
                }
                server.write_all(&message)?;
            }
        }
    }
    let _ = server.shutdown(Shutdown::Write);
    Ok(())
}
