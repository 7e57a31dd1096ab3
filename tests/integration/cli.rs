//! The `machine-state` binary, driven end to end: every command, exit code
//! and kind of bad input, against a database of the test server
//! (`--database-url`), and once on its embedded default.

use std::path::Path;

use assert_cmd::Command;
use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use machine_state::{AnyMachine, Machine, Offline, State};
use predicates::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use crate::support::{TestDb, assert_consistent, insert_raw_pair, snapshot};

/// The binary, with nothing from the environment that could redirect it, run
/// in a scratch directory so a mistake cannot write into the repository.
pub(crate) fn bare() -> Command {
    let mut command = Command::new(crate::support::machine_state_binary());
    command
        .env_remove("DATABASE_URL")
        .env_remove("MACHINE_STATE_DATA_DIR")
        .env_remove("RUST_LOG")
        .current_dir(env!("CARGO_TARGET_TMPDIR"));
    command
}

/// The binary on `db`.
fn cli(db: &TestDb) -> Command {
    let mut command = bare();
    command.arg("--database-url").arg(&db.url);
    command
}

/// Run and return stdout, asserting exit code 0 and a quiet stderr.
fn ok(command: &mut Command) -> String {
    let output = command.assert().success().stderr("").get_output().clone();
    String::from_utf8(output.stdout).unwrap()
}

/// Run, asserting `code` and exactly one line on stderr, which is returned.
fn fails(command: &mut Command, code: i32) -> String {
    let output = command.assert().code(code).get_output().clone();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
    stderr
}

/// Run, asserting clap's usage error: exit code 2, an `error:` first line.
fn usage_error(command: &mut Command) -> String {
    let output = command.assert().code(2).get_output().clone();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

/// `add` on `db`, returning the id it printed.
fn add(db: &TestDb, state: &str) -> Uuid {
    let out = ok(cli(db).args(["add", "--state", state]));
    out.trim().parse().unwrap()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn add_start_complete_show_work_across_invocations() {
    let db = TestDb::new();
    let id = add(&db, "offline");
    let process = Uuid::new_v4();
    let out = ok(cli(&db).args(["start", &id.to_string(), "--process", &process.to_string()]));
    assert_eq!(
        out,
        format!("{id}: offline -> processing (process {process})\n")
    );
    let out = ok(cli(&db).args(["complete", &id.to_string()]));
    assert_eq!(out, format!("{id}: processing -> idle\n"));

    let shown = ok(cli(&db).args(["show", &id.to_string()]));
    assert!(shown.contains("state    idle"), "{shown}");
    assert!(shown.contains("offline -> processing"), "{shown}");
    let shown = json(&ok(cli(&db).args(["show", &id.to_string(), "--json"])));
    assert_eq!(shown["id"], id.to_string());
    assert_eq!(shown["state"], "idle");
    assert_eq!(shown["process_id"], Value::Null);
    let history = shown["history"].as_array().unwrap();
    let kinds: Vec<&str> = history
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["create", "transition", "transition"]);
    assert_eq!(history[1]["process_id"], process.to_string());
    assert_consistent(&mut db.conn(), id);
}

#[test]
fn every_transition_command_moves_the_machine_and_keeps_it_consistent() {
    let db = TestDb::new();
    let id = add(&db, "offline");
    let id_text = id.to_string();
    for (args, expected) in [
        (vec!["online"], "offline -> idle"),
        (vec!["offline"], "idle -> offline"),
        (vec!["start"], "offline -> processing (process "),
        (vec!["stop"], "processing -> idle"),
        (vec!["start"], "idle -> processing (process "),
        (
            vec!["fail", "--message", "chamber pressure out of range"],
            "processing -> error",
        ),
        (vec!["reset"], "error -> idle"),
        (vec!["start"], "idle -> processing"),
        (vec!["fail", "--message", "heater"], "processing -> error"),
        (vec!["offline"], "error -> offline"),
    ] {
        let mut command = cli(&db);
        command.arg(args[0]).arg(&id_text).args(&args[1..]);
        let out = ok(&mut command);
        assert!(out.starts_with(&format!("{id}: {expected}")), "{out}");
        assert_consistent(&mut db.conn(), id);
    }
    let added = add(&db, "idle");
    let shown = json(&ok(cli(&db).args(["show", &added.to_string(), "--json"])));
    assert_eq!(shown["state"], "idle");
}

#[test]
fn an_illegal_transition_exits_1_naming_the_current_state_and_changes_nothing() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let idle = add(&db, "idle");
    let before = snapshot(conn);
    let id = idle.to_string();
    let stderr = fails(cli(&db).args(["complete", &id]), 1);
    assert_eq!(
        stderr,
        format!("error: machine `{id}` is `idle`: only a `processing` machine can be completed\n")
    );
    let stderr = fails(cli(&db).args(["reset", &id]), 1);
    assert!(
        stderr.contains("only an `error` machine can be reset"),
        "{stderr}"
    );
    let stderr = fails(cli(&db).args(["online", &id]), 1);
    assert!(stderr.contains("only an `offline` machine"), "{stderr}");
    let stderr = fails(cli(&db).args(["fail", &id, "--message", "late"]), 1);
    assert!(stderr.contains("is `idle`"), "{stderr}");
    assert_eq!(snapshot(conn), before);
}

#[test]
fn malformed_uuids_are_usage_errors_that_change_nothing() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = add(&db, "idle").to_string();
    let before = snapshot(conn);
    for args in [
        vec!["show", "not-a-uuid"],
        vec!["complete", "1234"],
        vec!["start", &id, "--process", "zzz"],
        vec!["add", "--id", "0000"],
        vec!["add", "--state", "processing"],
    ] {
        let stderr = usage_error(cli(&db).args(&args));
        assert!(stderr.starts_with("error: invalid value"), "{stderr}");
    }
    assert_eq!(snapshot(conn), before);
}

#[test]
fn unknown_ids_exit_2_with_one_line() {
    let db = TestDb::new();
    let unknown = Uuid::new_v4().to_string();
    for command in ["show", "complete", "start", "reset", "online"] {
        let stderr = fails(cli(&db).args([command, &unknown]), 2);
        assert_eq!(stderr, format!("error: machine `{unknown}` not found\n"));
    }
    let stderr = fails(cli(&db).args(["fail", &unknown, "--message", "x"]), 2);
    assert!(stderr.contains("not found"), "{stderr}");
}

#[test]
fn adding_a_taken_id_exits_2_and_changes_nothing() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = add(&db, "offline");
    let before = snapshot(conn);
    let stderr = fails(cli(&db).args(["add", "--id", &id.to_string()]), 2);
    assert_eq!(stderr, format!("error: machine `{id}` already exists\n"));
    assert_eq!(snapshot(conn), before);
    let out = ok(cli(&db).args(["add", "--id", &Uuid::nil().to_string()]));
    assert_eq!(out.trim(), Uuid::nil().to_string());
}

#[test]
fn bad_failure_messages_exit_2_and_change_nothing() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = add(&db, "idle").to_string();
    ok(cli(&db).args(["start", &id]));
    let before = snapshot(conn);

    for message in ["", "   "] {
        let stderr = usage_error(cli(&db).args(["fail", &id, "--message", message]));
        assert!(stderr.contains("must not be empty"), "{stderr}");
    }
    let too_long = "x".repeat(machine_state::MAX_DESCRIPTION_CHARS + 1);
    let stderr = usage_error(cli(&db).args(["fail", &id, "--message", &too_long]));
    assert!(stderr.contains("limited to 4096 characters"), "{stderr}");
    usage_error(cli(&db).args(["fail", &id]));

    let stdin = |input: Vec<u8>| {
        let mut command = cli(&db);
        command
            .args(["fail", &id, "--message-file", "-"])
            .write_stdin(input);
        command
    };
    let stderr = fails(&mut stdin(b"pressure\0valve".to_vec()), 2);
    assert!(stderr.contains("must not contain NUL bytes"), "{stderr}");
    let stderr = fails(&mut stdin(vec![b'a'; 10 * 1024 * 1024]), 2);
    assert!(
        stderr.contains("limited to 4096 characters, standard input holds more"),
        "{stderr}"
    );
    let stderr = fails(&mut stdin(b"\n".to_vec()), 2);
    assert!(stderr.contains("must not be empty"), "{stderr}");
    let stderr = fails(&mut stdin(vec![0xff, 0xfe, b'a']), 2);
    assert!(stderr.contains("must be UTF-8 text"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.txt");
    std::fs::write(&huge, vec![b'b'; 10 * 1024 * 1024]).unwrap();
    let huge = huge.to_str().unwrap();
    let stderr = fails(cli(&db).args(["fail", &id, "--message-file", huge]), 2);
    assert!(stderr.contains("huge.txt` holds more"), "{stderr}");
    let missing = dir.path().join("missing.txt");
    let missing = missing.to_str().unwrap();
    let stderr = fails(cli(&db).args(["fail", &id, "--message-file", missing]), 2);
    assert!(
        stderr.contains("cannot read the failure description"),
        "{stderr}"
    );
    assert_eq!(snapshot(conn), before, "nothing changed");

    ok(&mut stdin(b"valve stuck open\n".to_vec()));
    let shown = json(&ok(cli(&db).args(["show", &id, "--json"])));
    assert_eq!(shown["failure_description"], "valve stuck open");
}

#[test]
fn an_unknown_state_in_the_database_exits_1_and_changes_nothing() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = Uuid::new_v4();
    insert_raw_pair(conn, id, "running", "running");
    let before = snapshot(conn);
    let id = id.to_string();
    let stderr = fails(cli(&db).args(["show", &id]), 1);
    assert_eq!(
        stderr,
        format!("error: machine `{id}` has unknown state `running` in the database\n")
    );
    fails(cli(&db).args(["complete", &id]), 1);
    let out = cli(&db).arg("audit").assert().code(1).get_output().clone();
    let out = String::from_utf8(out.stdout).unwrap();
    assert!(out.contains(&id), "{out}");
    assert!(out.contains("unknown state string"), "{out}");
    assert_eq!(snapshot(conn), before);
}

#[test]
fn an_inconsistent_machine_is_refused_with_exit_1() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = add(&db, "idle");
    conn.batch_execute(&format!(
        "UPDATE machines SET status = 'offline' WHERE id = '{id}'"
    ))
    .unwrap();
    let before = snapshot(conn);
    let stderr = fails(cli(&db).args(["start", &id.to_string()]), 1);
    assert!(stderr.contains("is inconsistent"), "{stderr}");
    assert!(
        stderr.contains("`machines` says `offline`, `machine_state` says `idle`"),
        "{stderr}"
    );
    assert_eq!(snapshot(conn), before);
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// How many tables the `public` schema holds.
fn public_tables(conn: &mut PgConnection) -> i64 {
    diesel::sql_query(
        "SELECT count(*) AS count FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .get_result::<Count>(conn)
    .unwrap()
    .count
}

/// How many migrations the crate has.
fn migrations() -> usize {
    MigrationSource::<Pg>::migrations(&machine_state::migrations::MIGRATIONS)
        .unwrap()
        .len()
}

#[test]
fn a_database_without_migrations_exits_2_and_is_not_migrated_implicitly() {
    let db = TestDb::empty();
    let conn = &mut db.conn();
    for args in [
        vec!["add"],
        vec!["list"],
        vec!["audit"],
        vec!["show", &Uuid::nil().to_string()],
        vec!["stuck", "--older-than", "1h"],
    ] {
        let stderr = fails(cli(&db).args(&args), 2);
        assert!(
            stderr.contains("the database lacks migration(s)"),
            "{stderr}"
        );
        assert!(
            stderr.contains("run `machine-state migrate` first"),
            "{stderr}"
        );
    }
    assert_eq!(
        public_tables(conn),
        0,
        "not even diesel's bookkeeping table"
    );

    let out = ok(cli(&db).arg("migrate"));
    assert_eq!(out.lines().count(), migrations(), "{out}");
    assert!(out.lines().all(|l| l.starts_with("applied ")), "{out}");
    assert_eq!(ok(cli(&db).arg("migrate")), "the database is up to date\n");
    let id = add(&db, "idle");

    let out = ok(cli(&db).arg("rollback"));
    assert!(out.starts_with("reverted "), "{out}");
    let stderr = fails(cli(&db).args(["show", &id.to_string()]), 2);
    assert!(stderr.contains("lacks migration(s)"), "{stderr}");
    let out = ok(cli(&db).args(["rollback", "--all"]));
    assert_eq!(out.lines().count(), migrations() - 1, "{out}");
    assert_eq!(public_tables(conn), 1, "only diesel's bookkeeping table");
}

#[test]
fn audit_exits_1_on_divergence_and_repair_brings_it_back_to_zero() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let ids: Vec<Uuid> = (0..3).map(|_| add(&db, "idle")).collect();
    assert_eq!(
        ok(cli(&db).arg("audit")),
        "0 of 3 machines diverged (0.0% inconsistency)\n"
    );
    // A legacy writer's second write never landed: `machine_state` was
    // written last.
    conn.batch_execute(&format!(
        "UPDATE machine_state SET current_state = 'offline', updated_at = now() + interval '1 second'
         WHERE machine_id = '{}'",
        ids[1]
    ))
    .unwrap();

    let out = cli(&db).arg("audit").assert().code(1).get_output().clone();
    let out = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.ends_with("1 of 3 machines diverged (33.3% inconsistency)\n"),
        "{out}"
    );
    assert!(out.starts_with(&ids[1].to_string()), "{out}");
    let out = cli(&db)
        .args(["audit", "--json"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let report = json(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(report["machines"], 3);
    assert!((report["diverged_percent"].as_f64().unwrap() - 100.0 / 3.0).abs() < 1e-9);
    assert_eq!(
        report["diverged"][0]["pair"]["machine_id"],
        ids[1].to_string()
    );

    let before = snapshot(conn);
    let out = cli(&db)
        .args(["repair", "--dry-run"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let out = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.contains("machine_state won, would become `offline`"),
        "{out}"
    );
    assert_eq!(snapshot(conn), before, "a dry run writes nothing");

    let out = ok(cli(&db).args(["repair", "--json"]));
    let repairs = json(&out);
    assert_eq!(repairs[0]["winner"], "machine_state");
    assert_eq!(repairs[0]["applied"], true);
    assert_eq!(
        ok(cli(&db).arg("repair")),
        "nothing to repair: no machine is diverged\n"
    );
    ok(cli(&db).arg("audit"));
    assert_consistent(conn, ids[1]);
    let shown = json(&ok(cli(&db).args(["show", &ids[1].to_string(), "--json"])));
    assert_eq!(shown["state"], "offline");
    let history = shown["history"].as_array().unwrap();
    assert_eq!(history.last().unwrap()["kind"], "repair");
    assert_eq!(history.last().unwrap()["verb"], "repair");
}

#[test]
fn list_shows_every_machine_and_flags_diverged_ones() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    assert_eq!(
        ok(cli(&db).arg("list")),
        "no machines yet: add one with `machine-state add`\n"
    );
    let idle = add(&db, "idle");
    let diverged = Uuid::new_v4();
    insert_raw_pair(conn, diverged, "idle", "processing");
    let out = ok(cli(&db).arg("list"));
    assert_eq!(out.lines().count(), 3, "{out}");
    let line = |id: Uuid| {
        out.lines()
            .find(|l| l.starts_with(&id.to_string()))
            .unwrap()
    };
    assert!(line(idle).contains(" idle "), "{out}");
    assert!(!line(idle).contains("diverged"), "{out}");
    assert!(line(diverged).contains("diverged"), "{out}");

    let listed = json(&ok(cli(&db).args(["list", "--json"])));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    let entry = |id: Uuid| {
        listed
            .iter()
            .find(|e| e["machine_id"] == id.to_string())
            .unwrap()
    };
    assert_eq!(entry(idle)["status"], "idle");
    assert_eq!(entry(idle)["violations"], Value::Array(vec![]));
    assert_eq!(entry(diverged)["state"]["current_state"], "processing");
    assert!(!entry(diverged)["violations"].as_array().unwrap().is_empty());
}

#[test]
fn stuck_lists_machines_processing_for_longer_than_asked() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let old = add(&db, "idle");
    let fresh = add(&db, "idle");
    let process = Uuid::new_v4();
    ok(cli(&db).args(["start", &old.to_string(), "--process", &process.to_string()]));
    ok(cli(&db).args(["start", &fresh.to_string()]));
    conn.batch_execute(&format!(
        "UPDATE machines SET updated_at = updated_at - interval '2 hours' WHERE id = '{old}';
         UPDATE machine_state SET state_since = state_since - interval '2 hours',
             updated_at = updated_at - interval '2 hours' WHERE machine_id = '{old}';"
    ))
    .unwrap();

    let out = ok(cli(&db).args(["stuck", "--older-than", "1h 30m"]));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with(&format!("{old}  process {process}")),
        "{out}"
    );
    let found = json(&ok(cli(&db).args([
        "stuck",
        "--older-than",
        "90min",
        "--json",
    ])));
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["machine_id"], old.to_string());
    assert_eq!(
        ok(cli(&db).args(["stuck", "--older-than", "3h"])),
        "no machine has been processing for longer than 3h\n"
    );
    let stderr = usage_error(cli(&db).args(["stuck", "--older-than", "soon"]));
    assert!(
        stderr.starts_with("error: invalid value 'soon'"),
        "{stderr}"
    );
    usage_error(cli(&db).arg("stuck"));
}

#[test]
fn logs_are_quiet_by_default_and_v_shows_each_transition() {
    let db = TestDb::new();
    let id = add(&db, "idle").to_string();
    ok(cli(&db).args(["start", &id]));
    cli(&db)
        .args(["-v", "complete", &id])
        .assert()
        .success()
        .stderr(
            predicate::str::contains("completed machine state transition atomically")
                .and(predicate::str::contains(format!("machine_id={id}")))
                .and(predicate::str::contains("outcome=\"applied\"")),
        );
}

#[test]
fn help_documents_every_command_and_the_exit_codes() {
    let help = ok(bare().arg("--help"));
    for command in [
        "migrate",
        "rollback",
        "add",
        "show",
        "list",
        "start",
        "complete",
        "stop",
        "fail",
        "reset",
        "online",
        "offline",
        "operation",
        "audit",
        "repair",
        "stuck",
        "demo",
    ] {
        assert!(
            help.contains(&format!("\n  {command} ")),
            "{command}: {help}"
        );
        let sub = ok(bare().args([command, "--help"]));
        assert!(sub.contains("Exit codes:"), "{command}: {sub}");
    }
    assert!(help.contains("Exit codes:\n  0  success\n  1  a transition was refused"));
    assert!(
        help.contains("\n  3  the outcome of a transition is unknown"),
        "{help}"
    );
    let start = ok(bare().args(["start", "--help"]));
    assert!(start.contains("--operation-id <UUID>"), "{start}");
    bare()
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Usage: machine-state"));
    usage_error(bare().arg("frobnicate"));
}

#[test]
fn an_unreachable_database_exits_2_with_one_line() {
    let stderr = fails(
        bare().args([
            "--database-url",
            "postgresql://postgres@/nowhere?host=/nonexistent",
            "list",
        ]),
        2,
    );
    assert!(
        stderr.starts_with("error: could not connect to the database: "),
        "{stderr}"
    );
    let stderr = usage_error(bare().args(["--database-url", "x", "--data-dir", "y", "list"]));
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[test]
fn demo_shows_the_legacy_race_and_leaves_the_users_machines_alone() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let mine = Machine::<Offline>::create(conn, Uuid::new_v4()).unwrap();
    let before = snapshot(conn);
    let out = ok(cli(&db).args([
        "demo",
        "--machines",
        "4",
        "--workers",
        "3",
        "--seconds",
        "0.5",
    ]));
    assert!(
        out.starts_with("demo: 4 machines, 3 workers (1 starter, 1 executor, 1 stopper)"),
        "{out}"
    );
    assert!(out.contains("legacy two-write pattern: "), "{out}");
    let crate_row = out.lines().last().unwrap();
    let columns: Vec<&str> = crate_row.split_whitespace().collect();
    assert_eq!(&columns[..3], ["machine-state", "0.0%", "0.0%"], "{out}");
    assert!(out.contains("machine-state crate: "), "{out}");

    assert_eq!(snapshot(conn), before, "the user's machines are untouched");
    assert_eq!(
        AnyMachine::load(conn, mine.id()).unwrap().state(),
        State::Offline
    );
    let databases: Vec<Name> = diesel::sql_query(
        "SELECT datname AS name FROM pg_database WHERE datname LIKE 'machine_state_demo%'",
    )
    .load(conn)
    .unwrap();
    let left: Vec<&str> = databases.iter().map(|s| s.name.as_str()).collect();
    assert!(left.is_empty(), "the demo's database is dropped: {left:?}");
    usage_error(cli(&db).args(["demo", "--workers", "2"]));
    usage_error(cli(&db).args(["demo", "--seconds", "0"]));

    // A URL given as `key=value` pairs is pointed at the throwaway database too.
    let socket = crate::support::server().socket_dir().display().to_string();
    let pairs = format!("host={socket} port=5432 user=postgres dbname={}", db.name);
    let tiny = [
        "demo",
        "--machines",
        "2",
        "--workers",
        "3",
        "--seconds",
        "0.2",
    ];
    let out = ok(bare().arg("--database-url").arg(&pairs).args(tiny));
    assert!(out.contains("machine-state crate: "), "{out}");
    assert_eq!(snapshot(conn), before);

    // Without `CREATEDB`, the demo says so and writes nothing anywhere.
    conn.batch_execute("CREATE ROLE demo_without_createdb LOGIN")
        .unwrap();
    let url = format!(
        "postgresql://demo_without_createdb@/{}?host={socket}&port=5432",
        db.name
    );
    let stderr = fails(bare().arg("--database-url").arg(&url).args(tiny), 2);
    assert!(
        stderr.starts_with("error: cannot create the throwaway database `machine_state_demo_"),
        "{stderr}"
    );
    assert!(
        stderr.contains("permission denied to create database"),
        "{stderr}"
    );
    assert_eq!(snapshot(conn), before);
}

/// Processes whose command line mentions `path`.
pub(crate) fn processes_using(path: &Path) -> Vec<String> {
    let needle = path.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(needle))
        .collect()
}

#[test]
fn the_embedded_default_persists_between_invocations_and_leaves_no_server() {
    let dir = tempfile::tempdir().unwrap();
    // As root the server runs as `postgres`, which must reach the data dir.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data_dir = dir.path().join("pgdata");
    let embedded = || {
        let mut command = bare();
        command.arg("--data-dir").arg(&data_dir);
        command
    };
    let id = ok(embedded().arg("add")).trim().to_owned();
    ok(embedded().args(["start", &id]));
    ok(embedded().args(["complete", &id]));
    let shown = ok(embedded().args(["show", &id]));
    assert!(shown.contains("state    idle"), "{shown}");
    assert!(shown.contains("processing -> idle"), "{shown}");
    assert!(data_dir.join("PG_VERSION").exists());
    assert_eq!(processes_using(&data_dir), Vec::<String>::new());

    // Commands run at the same time take turns on the data directory.
    let concurrent: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(crate::support::machine_state_binary())
                .env_remove("DATABASE_URL")
                .env_remove("MACHINE_STATE_DATA_DIR")
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("add")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in concurrent {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{output:?}");
    }
    let listed = json(&ok(embedded().args(["list", "--json"])));
    assert_eq!(listed.as_array().unwrap().len(), 4);

    // The default is `.machine-state/pgdata` under the current directory.
    let out = ok(bare().current_dir(dir.path()).arg("list"));
    assert_eq!(out, "no machines yet: add one with `machine-state add`\n");
    assert!(dir.path().join(".machine-state/pgdata/PG_VERSION").exists());
    assert_eq!(processes_using(dir.path()), Vec::<String>::new());
}

#[test]
fn as_root_a_private_directory_gets_its_data_where_the_server_can_reach_it() {
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    // Like a clone in `/root`: `postgres` cannot search this directory.
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let name = private
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let in_private = || {
        let mut command = bare();
        command.current_dir(private.path());
        command
    };
    let id = ok(in_private().args(["add", "--state", "idle"]))
        .trim()
        .to_owned();
    ok(in_private().args(["start", &id]));
    let shown = ok(in_private().args(["show", &id]));
    assert!(shown.contains("state    processing"), "{shown}");
    let fallback: Vec<_> = std::fs::read_dir("/var/lib/machine-state")
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            let file = path.file_name().unwrap().to_str().unwrap();
            file.starts_with(&format!("{name}-"))
        })
        .collect();
    assert_eq!(fallback.len(), 1, "{fallback:?}");
    assert!(fallback[0].join("pgdata/PG_VERSION").exists());
    assert_eq!(processes_using(&fallback[0]), Vec::<String>::new());
    std::fs::remove_dir_all(&fallback[0]).unwrap();

    let explicit = private.path().join("pgdata");
    let stderr = fails(in_private().arg("--data-dir").arg(&explicit).arg("list"), 2);
    assert!(
        stderr.contains("choose a `--data-dir` it can reach"),
        "{stderr}"
    );
    assert!(!explicit.exists());

    // The demo needs no data directory: it runs on a throwaway server.
    let out = ok(in_private().args([
        "demo",
        "--machines",
        "3",
        "--workers",
        "3",
        "--seconds",
        "0.3",
    ]));
    assert!(out.contains("on a throwaway embedded server"), "{out}");
}

#[test]
fn show_tells_a_stop_from_a_completion() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let machine = Machine::<Offline>::create(conn, Uuid::new_v4()).unwrap();
    let id = machine.id();
    let idle = machine
        .start(conn, Uuid::new_v4())
        .unwrap()
        .complete(conn)
        .unwrap();
    idle.start(conn, Uuid::new_v4())
        .unwrap()
        .stop(conn)
        .unwrap();

    let text = ok(cli(&db).args(["show", &id.to_string()]));
    let verbs: Vec<&str> = text
        .lines()
        .skip_while(|line| *line != "history")
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        verbs,
        ["create", "start", "complete", "start", "stop"],
        "{text}"
    );

    let json: Value =
        serde_json::from_str(&ok(cli(&db).args(["show", &id.to_string(), "--json"]))).unwrap();
    let verbs: Vec<&str> = json["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["verb"].as_str().unwrap())
        .collect();
    assert_eq!(
        verbs,
        ["create", "start", "complete", "start", "stop"],
        "{json}"
    );
}
