//! The thread that owns the server process: it spawns it, waits for it, and
//! shuts it down. (Should this process die without stopping it, the janitor
//! does: `janitor.rs`.)

use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::Error;

use super::*;

pub(super) struct Supervisor {
    /// Receives the first signal of the shutdown: SIGINT (fast) or SIGQUIT
    /// (immediate).
    pub(super) stop: mpsc::Sender<Signal>,
    pub(super) thread: JoinHandle<()>,
}

/// A signal to the server's postmaster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Signal {
    /// Fast shutdown: sessions are disconnected, a checkpoint is written.
    Interrupt,
    /// Immediate shutdown, as a crash: crash recovery at the next start.
    Quit,
    /// The kernel's OOM killer: the backends notice later, on their own.
    Kill,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "INT",
            Signal::Quit => "QUIT",
            Signal::Kill => "KILL",
        }
    }
}

/// Send `signal` to process `pid` (with the shell's `kill`: as root, to a
/// server running as the unprivileged user too).
fn kill(pid: u32, signal: Signal) {
    let _ = Command::new("sh")
        .args(["-c", "kill -\"$0\" \"$1\" 2>/dev/null", signal.name()])
        .arg(pid.to_string())
        .status();
}

/// Spawn the server from a thread that owns it until it is stopped.
pub(super) fn spawn_owner(
    mut command: Command,
    exited: Arc<Mutex<Option<ExitStatus>>>,
) -> Result<Supervisor, Error> {
    let (stop, stop_requested) = mpsc::channel::<Signal>();
    let (spawned, spawn_result) = mpsc::channel::<std::io::Result<()>>();
    let thread = thread::Builder::new()
        .name("embedded-postgres".into())
        .spawn(move || {
            let mut child = match command.spawn() {
                Ok(child) => {
                    let _ = spawned.send(Ok(()));
                    child
                }
                Err(e) => {
                    let _ = spawned.send(Err(e));
                    return;
                }
            };
            loop {
                match stop_requested.recv_timeout(Duration::from_millis(100)) {
                    Err(RecvTimeoutError::Timeout) => {
                        if let Ok(Some(status)) = child.try_wait() {
                            *exited.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                            let _ = stop_requested.recv();
                            return;
                        }
                    }
                    Ok(signal) => {
                        shut_down(&mut child, signal);
                        return;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        shut_down(&mut child, Signal::Interrupt);
                        return;
                    }
                }
            }
        })
        .map_err(|e| server_error("cannot start the server thread", e))?;
    match spawn_result.recv() {
        Ok(Ok(())) => Ok(Supervisor { stop, thread }),
        Ok(Err(e)) => Err(server_error("cannot start `postgres`", e)),
        Err(_) => Err(Error::Server("the server thread died".into())),
    }
}

/// Shut down starting with `first` (SIGINT: fast, SIGQUIT: immediate), then
/// immediate shutdown, then kill: never leave it running.
pub(super) fn shut_down(child: &mut Child, first: Signal) {
    let pid = child.id();
    let escalation = [Signal::Interrupt, Signal::Quit, Signal::Kill];
    let from = escalation.iter().position(|&s| s == first).unwrap_or(0);
    for &signal in &escalation[from..] {
        kill(pid, signal);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.wait();
}
