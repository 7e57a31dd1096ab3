//! `machine-state watch`, driven end to end through the real binary: its
//! lines, its Prometheus endpoint, a database outage, and its exit on a
//! signal.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::{bare, processes_using};
use crate::support::{TestDb, idle_machine, server};

/// How long a test waits for a line or an exit before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// The interval of the tests on a test server's database.
const FAST: &str = "--interval=100ms";

/// A running `watch`, killed if the test ends before it stopped.
struct Watch {
    child: Child,
    lines: Receiver<String>,
    /// `host:port` of the metrics endpoint.
    addr: Option<String>,
}

impl Watch {
    /// `machine-state <global> watch <args>`, its stdout read line by line.
    fn start(global: &[&str], args: &[&str]) -> Watch {
        let mut command = std::process::Command::new(crate::support::machine_state_binary());
        command
            .env_remove("DATABASE_URL")
            .env_remove("MACHINE_STATE_DATA_DIR")
            .env_remove("RUST_LOG")
            .current_dir(env!("CARGO_TARGET_TMPDIR"))
            .args(global)
            .arg("watch")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut watch = Watch {
            child,
            lines,
            addr: None,
        };
        if args.contains(&"--metrics-addr") {
            let first = watch.next_line();
            let addr = first
                .strip_prefix("serving metrics on http://")
                .and_then(|rest| rest.strip_suffix("/metrics"))
                .unwrap_or_else(|| panic!("no address first: {first}"));
            watch.addr = Some(addr.to_owned());
        }
        watch
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .expect("`watch` printed no line in time")
    }

    /// The next line that contains `needle` (earlier ones are skipped: an
    /// audit may have started before the change).
    fn line_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let line = self.next_line();
            if line.contains(needle) {
                return line;
            }
            assert!(Instant::now() < deadline, "no line with `{needle}`");
        }
    }

    /// The Prometheus text of the endpoint.
    fn scrape(&self) -> String {
        let addr = self.addr.as_deref().expect("no `--metrics-addr`");
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        body.to_owned()
    }

    /// The value of the sample `series` (`name` or `name{labels}`, labels in
    /// the exporter's order) in a fresh scrape, or `None`.
    fn sample(&self, series: &str) -> Option<f64> {
        let body = self.scrape();
        body.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|value| value.parse().unwrap())
    }

    /// Send `signal` and wait for the exit.
    fn stop(mut self, signal: Signal) -> ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "`watch` did not exit on {signal}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_sees_a_half_write_and_its_repair_in_its_line_and_its_gauges() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let broken = idle_machine(conn);
    idle_machine(conn);
    let watch = Watch::start(
        &["--database-url", &db.url],
        &[FAST, "--metrics-addr", "127.0.0.1:0", "--stuck-after", "2h"],
    );

    let line = watch.line_with("machines diverged");
    assert!(
        line.ends_with(
            "0 of 2 machines diverged (0.0% inconsistency); 0 stuck in processing for over 2h; \
             enforcement off"
        ),
        "{line}"
    );
    assert_eq!(watch.sample("machine_state_machines"), Some(2.0));
    assert_eq!(watch.sample("machine_state_diverged_machines"), Some(0.0));
    assert_eq!(watch.sample("machine_state_diverged_ratio"), Some(0.0));
    assert_eq!(watch.sample("machine_state_invariants_enforced"), Some(0.0));
    assert_eq!(watch.sample("machine_state_stuck_machines"), Some(0.0));
    assert_eq!(
        watch.sample(
            r#"machine_state_recorded_transitions_total{from="offline",to="idle",kind="transition"}"#
        ),
        Some(2.0)
    );

    // The legacy writer's first write, without its second.
    conn.batch_execute(&format!(
        "UPDATE machines SET status = 'offline' WHERE id = '{broken}'"
    ))
    .unwrap();
    watch.line_with("1 of 2 machines diverged (50.0% inconsistency)");
    assert_eq!(watch.sample("machine_state_diverged_ratio"), Some(0.5));
    assert_eq!(watch.sample("machine_state_diverged_machines"), Some(1.0));

    let repaired = bare()
        .args(["--database-url", &db.url, "repair"])
        .output()
        .unwrap();
    assert!(repaired.status.success(), "{repaired:?}");
    watch.line_with("0 of 2 machines diverged (0.0% inconsistency)");
    assert_eq!(watch.sample("machine_state_diverged_ratio"), Some(0.0));
    assert_eq!(watch.sample("machine_state_diverged_machines"), Some(0.0));
    assert_eq!(
        watch.sample(
            r#"machine_state_recorded_transitions_total{from="idle",to="offline",kind="repair"}"#
        ),
        Some(1.0)
    );

    // A machine processing since long ago (both rows agree), and the
    // invariants enforced.
    let stuck = idle_machine(conn);
    conn.batch_execute(&format!(
        "SELECT machine_state_enforce_invariants();
         BEGIN;
         UPDATE machines SET status = 'processing', current_process_id = gen_random_uuid(),
             updated_at = '2020-01-01T00:00:00Z' WHERE id = '{stuck}';
         UPDATE machine_state s SET current_state = 'processing', process_id = m.current_process_id,
             state_since = m.updated_at FROM machines m WHERE m.id = s.machine_id AND s.machine_id = '{stuck}';
         COMMIT;"
    ))
    .unwrap();
    let line = watch.line_with("1 stuck in processing");
    assert!(line.contains("0 of 3 machines diverged"), "{line}");
    assert!(line.ends_with("enforcement on"), "{line}");
    assert_eq!(watch.sample("machine_state_stuck_machines"), Some(1.0));
    assert_eq!(watch.sample("machine_state_invariants_enforced"), Some(1.0));
    assert!(
        watch
            .sample(r#"machine_state_audits_total{result="ok"}"#)
            .unwrap()
            >= 4.0,
        "every audit is counted"
    );

    let status = watch.stop(Signal::SIGTERM);
    assert!(status.success(), "{status:?}");
}

#[test]
fn watch_reports_a_failed_audit_and_recovers_when_the_database_is_back() {
    let db = TestDb::new();
    idle_machine(&mut db.conn());
    let watch = Watch::start(
        &["--database-url", &db.url],
        &[FAST, "--metrics-addr", "127.0.0.1:0"],
    );
    watch.line_with("0 of 1 machines diverged");

    // The outage: the database disappears, connections and all.
    let admin = &mut PgConnection::establish(&server().url("postgres")).unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", db.name))
        .unwrap();
    // First the connection it held is gone, then each interval tries to
    // connect again, and says why it cannot.
    watch.line_with("audit failed: ");
    let line = watch.line_with(&format!("database \"{}\" does not exist", db.name));
    assert!(line.contains("audit failed: "), "{line}");
    assert!(
        watch
            .sample(r#"machine_state_audits_total{result="error"}"#)
            .unwrap()
            >= 1.0
    );

    // Back, empty: the next audit connects again.
    admin
        .batch_execute(&format!("CREATE DATABASE {}", db.name))
        .unwrap();
    machine_state::run_migrations(&mut db.conn()).unwrap();
    watch.line_with("0 of 0 machines diverged");
    assert_eq!(watch.sample("machine_state_machines"), Some(0.0));

    let status = watch.stop(Signal::SIGINT);
    assert!(status.success(), "Ctrl-C ends it cleanly: {status:?}");
}

#[test]
fn watch_on_the_embedded_default_lets_other_commands_run_between_audits() {
    let dir = tempfile::tempdir().unwrap();
    // As root the server runs as `postgres`, which must reach the data dir.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data_dir = dir.path().join("pgdata");
    let data_dir_arg = data_dir.to_str().unwrap();
    let watch = Watch::start(&["--data-dir", data_dir_arg], &["--interval", "1s"]);
    watch.line_with("0 of 0 machines diverged");
    // While `watch` runs, another command on the same data directory gets
    // its turn.
    let added = bare()
        .args(["--data-dir", data_dir_arg, "add"])
        .timeout(PATIENCE)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    watch.line_with("0 of 1 machines diverged");
    let status = watch.stop(Signal::SIGTERM);
    assert!(status.success(), "{status:?}");
    assert_eq!(
        processes_using(&data_dir),
        Vec::<String>::new(),
        "no server left"
    );
}

#[test]
fn watch_refuses_a_zero_interval() {
    let output = bare().args(["watch", "--interval", "0s"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("must be more than 0"), "{stderr}");
}

#[test]
fn watch_refuses_a_metrics_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = bare()
        .args(["--database-url", "postgresql://nowhere.invalid/none"])
        .args(["watch", "--metrics-addr", &addr])
        .timeout(PATIENCE)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("error: invalid input: cannot listen on `{addr}`")),
        "{stderr}"
    );
}
