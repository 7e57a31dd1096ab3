//! The users' legacy Supabase project, start to finish (issue 20): tables made
//! from the dashboard long ago (so Supabase's default privileges granted them
//! to anon, authenticated and service_role), migrated by the non-superuser
//! owner; `doctor` finds 8 exposures and the services locked out;
//! `doctor --fix` and one `grant` later, `doctor` is clean, anon writes
//! nothing, an authenticated dashboard still reads both tables and edits a
//! machine's location, and the service role's four legacy RPCs work. Every
//! call from the API goes through PostgREST's login role, as PostgREST makes
//! it.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::Text;
use machine_state::doctor::ExposureKind;

use crate::adoption::LEGACY_FIXTURE;
use crate::live_deploy::{Writers, hold_machines};
use crate::supabase::{api_conn, supabase_project};
use crate::support::{TestDb, assert_consistent, schema_dump, sqlstate_of};

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = Text)]
    value: String,
}

fn value(conn: &mut PgConnection, query: &str) -> String {
    sql_query(query).get_result::<Value>(conn).unwrap().value
}

/// The legacy project on Supabase. Its services use the service-role key,
/// so the self-hosted fixture's `legacy_app` grants are not part of it.
fn legacy_supabase_project() -> TestDb {
    let db = supabase_project(Some(LEGACY_FIXTURE));
    db.conn()
        .batch_execute("REVOKE ALL ON machines, machine_state FROM legacy_app")
        .unwrap();
    db
}

/// `statement` as PostgREST runs a request of `role`: one transaction,
/// `SET LOCAL ROLE`, the JWT's claims; its SQLSTATE (`00000` on success).
fn request(api: &mut PgConnection, role: &str, statement: &str) -> String {
    sqlstate_of(api, "SELECT 1");
    api.transaction(|conn| {
        conn.batch_execute(&format!(
            "SET LOCAL ROLE {role};
             SELECT set_config('request.jwt.claims', '{{\"role\": \"{role}\"}}', true);"
        ))?;
        Ok::<_, diesel::result::Error>(sqlstate_of(conn, statement))
    })
    .unwrap()
}

/// `call` (an RPC with named arguments) as `role`, its JSON result.
fn rpc(api: &mut PgConnection, role: &str, call: &str) -> serde_json::Value {
    let text = api
        .transaction(|conn| {
            conn.batch_execute(&format!(
                "SET LOCAL ROLE {role};
                 SELECT set_config('request.jwt.claims', '{{\"role\": \"{role}\"}}', true);"
            ))?;
            sql_query(format!("SELECT {call}::text AS value")).get_result::<Value>(conn)
        })
        .unwrap_or_else(|e| panic!("{call}: {e}"));
    serde_json::from_str(&text.value).unwrap()
}

fn command(db: &TestDb, args: &[&str]) -> std::process::Output {
    assert_cmd::Command::cargo_bin("machine-state")
        .unwrap()
        .args(["--database-url", &db.url])
        .args(args)
        .output()
        .unwrap()
}

const IDLE: &str = "c0000000-0000-0000-0000-000000000003";
const OTHER_IDLE: &str = "c0000000-0000-0000-0000-000000000004";

#[test]
fn a_legacy_project_goes_from_8_exposures_to_clean_with_doctor_fix_and_one_grant() {
    let db = legacy_supabase_project();
    let migrated = command(&db, &["migrate"]);
    assert_eq!(migrated.status.code(), Some(0), "{migrated:?}");
    let said = String::from_utf8_lossy(&migrated.stderr);
    assert!(said.contains("8 exposure(s) found"), "{said}");
    assert!(
        said.contains("`machine-state grant service_role`"),
        "{said}"
    );
    let owner = &mut db.conn();
    let api = &mut api_conn(&db);

    // Before: 8 exposures, each with its fix, and the services locked out.
    let report = machine_state::doctor::doctor(owner).unwrap();
    let found: Vec<(ExposureKind, String, Option<String>)> = report
        .exposures
        .iter()
        .map(|e| (e.kind, e.object.clone(), e.role.clone()))
        .collect();
    let mut expected = Vec::new();
    for table in ["public.machine_state", "public.machines"] {
        for role in ["anon", "authenticated", "service_role"] {
            expected.push((
                ExposureKind::DirectWrite,
                table.to_owned(),
                Some(role.into()),
            ));
        }
    }
    for table in ["public.machine_state", "public.machines"] {
        expected.push((ExposureKind::RlsDisabled, table.to_owned(), None));
    }
    assert_eq!(found, expected, "{report:#?}");
    assert!(report.exposures.iter().all(|e| !e.fix.is_empty()));
    assert_eq!(
        report.locked_out.as_ref().map(|l| l.role.as_str()),
        Some("service_role")
    );
    let text = command(&db, &["doctor"]);
    assert_eq!(text.status.code(), Some(1));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("fix: REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON public.machines FROM anon;"),
        "{text}"
    );
    assert!(
        text.contains("fix: ALTER TABLE public.machines ENABLE ROW LEVEL SECURITY;"),
        "{text}"
    );
    // The services' RPC is refused: the legacy executor would fall back.
    assert_eq!(
        request(
            api,
            "service_role",
            &format!("SELECT atomic_complete_machine_state(p_machine_id := '{IDLE}')")
        ),
        "42501"
    );
    let before_fix = schema_dump(&db);

    // `doctor --fix`, then one grant.
    let fixed = command(&db, &["doctor", "--fix", "--json"]);
    assert_eq!(fixed.status.code(), Some(1), "still locked out: {fixed:?}");
    let fixed: serde_json::Value = serde_json::from_slice(&fixed.stdout).unwrap();
    assert_eq!(fixed["applied"].as_array().unwrap().len(), 8, "{fixed:#}");
    assert_eq!(fixed["exposures"], serde_json::json!([]));
    let granted = command(&db, &["grant", "service_role"]);
    assert_eq!(granted.status.code(), Some(0), "{granted:?}");
    let clean = command(&db, &["doctor"]);
    assert_eq!(clean.status.code(), Some(0), "{clean:?}");
    assert!(String::from_utf8_lossy(&clean.stdout).contains("nothing exposed"));
    // Idempotent: nothing left to fix.
    assert_eq!(machine_state::doctor::fix_exposures(owner).unwrap(), vec![]);

    // anon writes nothing (and reads what it could read).
    for statement in [
        format!("UPDATE machines SET location = 'anywhere' WHERE id = '{IDLE}'"),
        format!("UPDATE machines SET status = 'error' WHERE id = '{IDLE}'"),
        format!("UPDATE machine_state SET current_state = 'error' WHERE machine_id = '{IDLE}'"),
        format!("DELETE FROM machine_state WHERE machine_id = '{IDLE}'"),
        format!("DELETE FROM machines WHERE id = '{IDLE}'"),
        "INSERT INTO machines (serial_number, location, model, machine_type, install_date, \
         admin_id) VALUES ('X', 'x', 'x', 'x', '2026-01-01', 1)"
            .to_owned(),
        "TRUNCATE machine_state".to_owned(),
        format!("SELECT atomic_complete_machine_state(p_machine_id := '{IDLE}')"),
    ] {
        assert_eq!(
            request(api, "anon", &statement),
            "42501",
            "anon: {statement}"
        );
    }
    assert_eq!(
        request(api, "anon", "SELECT count(*) FROM machines"),
        "00000"
    );

    // An authenticated dashboard reads both tables, edits a location, and
    // writes no state.
    let rows = api
        .transaction(|conn| {
            conn.batch_execute("SET LOCAL ROLE authenticated")?;
            sql_query(
                "SELECT format('%s/%s', (SELECT count(*) FROM machines),
                                        (SELECT count(*) FROM machine_state)) AS value",
            )
            .get_result::<Value>(conn)
        })
        .unwrap()
        .value;
    assert_eq!(
        rows,
        value(
            owner,
            "SELECT format('%s/%s', (SELECT count(*) FROM machines), (SELECT count(*) FROM machine_state)) AS value"
        )
    );
    assert_eq!(
        request(
            api,
            "authenticated",
            &format!("UPDATE machines SET location = 'bay 9' WHERE id = '{IDLE}'")
        ),
        "00000"
    );
    assert_eq!(
        value(
            owner,
            &format!("SELECT location AS value FROM machines WHERE id = '{IDLE}'")
        ),
        "bay 9"
    );
    for statement in [
        format!("UPDATE machines SET status = 'error' WHERE id = '{IDLE}'"),
        format!("UPDATE machines SET current_process_id = gen_random_uuid() WHERE id = '{IDLE}'"),
        format!("UPDATE machine_state SET current_state = 'error' WHERE machine_id = '{IDLE}'"),
        format!("DELETE FROM machines WHERE id = '{IDLE}'"),
    ] {
        assert_eq!(
            request(api, "authenticated", &statement),
            "42501",
            "authenticated: {statement}"
        );
    }

    // The service role: its four legacy RPCs work; it writes no state directly.
    let run = uuid::Uuid::new_v4();
    let started = rpc(
        api,
        "service_role",
        &format!(
            "atomic_processing_machine_state(p_machine_id := '{IDLE}', p_process_id := '{run}')"
        ),
    );
    assert_eq!(started["machine"]["status"], "processing");
    let failed = rpc(
        api,
        "service_role",
        &format!(
            "atomic_error_machine_state(p_machine_id := '{IDLE}', p_error_message := 'pump tripped')"
        ),
    );
    assert_eq!(failed["machine_state"]["current_state"], "error");
    let reset = rpc(
        api,
        "service_role",
        &format!(
            "atomic_update_machine_state(p_machine_id := '{IDLE}', p_machine_status := 'idle',
                 p_current_process_id := NULL, p_machine_state_current_state := 'idle',
                 p_machine_state_process_id := NULL, p_is_failure_mode := false,
                 p_failure_description := NULL)"
        ),
    );
    assert_eq!(reset["machine"]["status"], "idle");
    rpc(
        api,
        "service_role",
        &format!(
            "atomic_processing_machine_state(p_machine_id := '{OTHER_IDLE}', p_process_id := '{run}')"
        ),
    );
    let completed = rpc(
        api,
        "service_role",
        &format!("atomic_complete_machine_state(p_machine_id := '{OTHER_IDLE}')"),
    );
    assert_eq!(completed["machine_state"]["current_state"], "idle");
    // The stopper: a user abort, fenced on the run it stops.
    let run = uuid::Uuid::new_v4();
    rpc(
        api,
        "service_role",
        &format!(
            "atomic_processing_machine_state(p_machine_id := '{IDLE}', p_process_id := '{run}')"
        ),
    );
    let stopped = rpc(
        api,
        "service_role",
        &format!(
            "to_json(machine_state_transition(p_machine_id := '{IDLE}', p_from := 'processing',
                 p_to := 'idle', p_process_id := '{run}'))"
        ),
    );
    assert_eq!(stopped["to_state"], "idle");
    for id in [IDLE, OTHER_IDLE] {
        assert_consistent(owner, id.parse().unwrap());
    }
    assert_eq!(
        request(
            api,
            "service_role",
            &format!("UPDATE machines SET status = 'error' WHERE id = '{IDLE}'")
        ),
        "42501"
    );
    assert_eq!(
        request(
            api,
            "service_role",
            &format!("UPDATE machines SET location = 'bay 7' WHERE id = '{IDLE}'")
        ),
        "00000",
        "the service role kept its descriptive edits"
    );

    // Undone exactly: with the grant taken back, the schema is as before.
    let revoked = command(&db, &["revoke", "service_role"]);
    assert_eq!(revoked.status.code(), Some(0), "{revoked:?}");
    let undone = command(&db, &["doctor", "--undo-fix"]);
    assert_eq!(undone.status.code(), Some(1), "{undone:?}");
    assert_same_dump(&schema_dump(&db), &before_fix);
    assert_eq!(
        machine_state::doctor::doctor(owner)
            .unwrap()
            .exposures
            .len(),
        8
    );
}

#[test]
fn reverting_the_migration_undoes_the_recorded_fixes() {
    let db = legacy_supabase_project();
    let owner = &mut db.conn();
    machine_state::run_migrations(owner).unwrap();
    let before_fix = schema_dump(&db);
    assert_eq!(
        machine_state::doctor::fix_exposures(owner).unwrap().len(),
        8
    );
    assert_ne!(schema_dump(&db), before_fix);
    while !machine_state::revert_last_migration(owner)
        .unwrap()
        .contains("20261205200000")
    {}
    machine_state::run_migrations(owner).unwrap();
    assert_same_dump(&schema_dump(&db), &before_fix);
}

/// Two schema dumps are equal; otherwise, the lines only one of them has.
#[track_caller]
fn assert_same_dump(now: &str, before: &str) {
    if now != before {
        let only_now: Vec<&str> = now.lines().filter(|l| !before.contains(l)).collect();
        let only_before: Vec<&str> = before.lines().filter(|l| !now.contains(l)).collect();
        panic!("dumps differ:\nnow only: {only_now:#?}\nbefore only: {only_before:#?}");
    }
}

#[test]
fn the_exported_script_applies_with_psql_and_leaves_no_pending_migration() {
    let db = supabase_project(None);
    let exported = command(&db, &["export-migrations"]);
    assert_eq!(exported.status.code(), Some(0), "{exported:?}");
    let script = std::env::temp_dir().join(format!("machine-state-{}.sql", db.name));
    std::fs::write(&script, &exported.stdout).unwrap();
    let psql = std::process::Command::new(crate::support::server().bin_dir().join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &db.url, "-f"])
        .arg(&script)
        .output()
        .unwrap();
    std::fs::remove_file(&script).unwrap();
    assert!(psql.status.success(), "{psql:?}");
    let owner = &mut db.conn();
    assert_eq!(
        machine_state::run_migrations(owner).unwrap(),
        Vec::<String>::new()
    );
    let again = command(&db, &["export-migrations"]);
    assert!(again.stdout.is_empty(), "{again:?}");
    // The same safety as `migrate` gives: nothing exposed, services locked out.
    let report = machine_state::doctor::doctor(owner).unwrap();
    assert_eq!(report.exposures, vec![], "{report:#?}");
    assert!(report.locked_out.is_some());
}

#[test]
fn doctor_fix_on_a_live_project_waits_out_a_stalled_writer_and_stalls_no_other() {
    use std::time::Duration;

    let db = legacy_supabase_project();
    assert_eq!(command(&db, &["migrate"]).status.code(), Some(0));
    // The other executors go on writing, the legacy way.
    let writers = Writers::start(&db);

    // Behind the stalled executor, `--fix` gives up within its budget,
    // naming it, and fixes nothing.
    let (mut holder, pid) = hold_machines(&db);
    let gave_up = command(
        &db,
        &[
            "doctor",
            "--fix",
            "--ddl-lock-timeout",
            "200ms",
            "--budget",
            "1s",
        ],
    );
    let stderr = String::from_utf8_lossy(&gave_up.stderr);
    assert_eq!(gave_up.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: fixing the exposures gave up after")
            && stderr.contains(&format!("backend {pid} (`stalled-executor`")),
        "{stderr}"
    );
    let report = machine_state::doctor::doctor(&mut db.conn()).unwrap();
    assert_eq!(report.exposures.len(), 8, "{report:?}");

    // Once it ends (2 s from now), `--fix` applies.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        holder.batch_execute("ROLLBACK").unwrap();
    });
    let fixed = command(&db, &["doctor", "--fix"]);
    release.join().unwrap();
    let worst = writers.assert_never_stalled();
    let stdout = String::from_utf8_lossy(&fixed.stdout);
    assert!(stdout.contains("fixed: "), "{stdout}");
    let report = machine_state::doctor::doctor(&mut db.conn()).unwrap();
    assert!(report.exposures.is_empty(), "{report:?}");
    eprintln!("doctor --fix behind a stalled executor: worst legacy write {worst:?}");
}

#[test]
fn the_exported_script_stops_behind_a_stalled_writer_and_applies_nothing() {
    let db = legacy_supabase_project();
    let exported = command(&db, &["export-migrations"]);
    assert_eq!(exported.status.code(), Some(0), "{exported:?}");
    let script = std::env::temp_dir().join(format!("machine-state-{}.sql", db.name));
    std::fs::write(&script, &exported.stdout).unwrap();
    let (mut holder, _) = hold_machines(&db);
    let began = std::time::Instant::now();
    let psql = std::process::Command::new(crate::support::server().bin_dir().join("psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
        ])
        .args(["-d", &db.url, "-f"])
        .arg(&script)
        // Without a lock timeout of its own the script would wait as long as
        // the writer stays: cut that at 10 s (SQLSTATE 57014, not 55P03).
        .env("PGOPTIONS", "-c statement_timeout=10s")
        .output()
        .unwrap();
    let took = began.elapsed();
    holder.batch_execute("ROLLBACK").unwrap();
    std::fs::remove_file(&script).unwrap();
    let stderr = String::from_utf8_lossy(&psql.stderr);
    assert!(
        !psql.status.success() && stderr.contains("55P03"),
        "{stderr}"
    );
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    assert_eq!(
        value(
            &mut db.conn(),
            "SELECT coalesce(to_regclass('__diesel_schema_migrations')::text, 'none') AS value"
        ),
        "none",
        "nothing is applied"
    );
}
