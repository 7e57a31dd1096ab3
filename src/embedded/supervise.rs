//! The thread that owns the server process: it spawns it (with the
//! parent-death signal), waits for it, and shuts it down.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::Error;

use super::*;

pub(super) struct Supervisor {
    /// Receives the first signal of the shutdown: SIGINT (fast) or SIGQUIT
    /// (immediate).
    pub(super) stop: mpsc::Sender<Signal>,
    pub(super) thread: JoinHandle<()>,
}

/// Spawn the server from a thread that lives exactly as long as the server
/// should: the parent-death signal fires when the *thread* that spawned a
/// child ends, so it must not be whatever short-lived thread called us.
pub(super) fn spawn_owner(
    mut command: Command,
    exited: Arc<Mutex<Option<ExitStatus>>>,
) -> Result<Supervisor, Error> {
    let (stop, stop_requested) = mpsc::channel::<Signal>();
    let (spawned, spawn_result) = mpsc::channel::<std::io::Result<()>>();
    let thread = thread::Builder::new()
        .name("embedded-postgres".into())
        .spawn(move || {
            // SAFETY: `prctl` is async-signal-safe; the closure allocates
            // nothing and touches no locks.
            #[expect(
                unsafe_code,
                reason = "the parent-death signal is set in the child, between fork and exec"
            )]
            unsafe {
                command.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(std::io::Error::from)
                });
            }
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
                        shut_down(&mut child, Signal::SIGINT);
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
    let pid = Pid::from_raw(child.id() as i32);
    let escalation = [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGKILL];
    let from = escalation.iter().position(|&s| s == first).unwrap_or(0);
    for &signal in &escalation[from..] {
        let _ = kill(pid, signal);
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
