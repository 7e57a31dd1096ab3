//! The testing kit as its documentation shows it: a `TestServer` in a
//! `static`, never dropped. When the test binary exits, nothing of the
//! server may be left: no process, no directory.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use machine_state::testing::TestServer;

/// Set in the child run of this very test binary.
const CHILD: &str = "MACHINE_STATE_TEST_STATIC_SERVER_CHILD";

/// How long the janitor may take once the binary has exited.
const PATIENCE: Duration = Duration::from_secs(30);

/// The child: start the documented `static` server, print its data
/// directory, and exit without dropping it (only runs when asked).
#[test]
#[ignore = "run by `a_server_kept_in_a_static_leaves_nothing_behind`"]
fn child_keeps_a_server_in_a_static() {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let server = SERVER.get_or_init(|| TestServer::start().unwrap());
    server.database().unwrap();
    println!("data_dir={}", server.server().data_dir().display());
}

#[test]
fn a_server_kept_in_a_static_leaves_nothing_behind() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "testing_kit::child_keeps_a_server_in_a_static",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data_dir: PathBuf = stdout
        .split("data_dir=")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("the child printed no data directory: {stdout}"))
        .into();
    let scratch = data_dir.parent().unwrap().to_path_buf();
    let deadline = Instant::now() + PATIENCE;
    while (scratch.exists() || !servers_using(&data_dir).is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        servers_using(&data_dir),
        Vec::<String>::new(),
        "a server was left running"
    );
    assert!(!scratch.exists(), "{} was left behind", scratch.display());
}

/// The command lines of the processes that name `data_dir`.
fn servers_using(data_dir: &std::path::Path) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-af", &data_dir.display().to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}
