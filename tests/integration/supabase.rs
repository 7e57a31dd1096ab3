//! On a database set up as Supabase sets one up (tests/fixtures/supabase.sql:
//! the API roles, default privileges that grant everything created in
//! `public` to them by name, `pgrst.db_schemas`): after `migrate`, the public
//! API roles can change nothing and call no transition, Supabase's linter
//! rules find nothing on our objects, the legacy Python wrappers' RPCs work
//! exactly as PostgREST sends them, and `doctor` says so.

use std::sync::Mutex;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::Text;
use machine_state::doctor::ExposureKind;
use machine_state::{Idle, Machine, Offline};
use uuid::Uuid;

use crate::adoption::LEGACY_FIXTURE;
use crate::support::{TestDb, assert_consistent, snapshot, sqlstate_of};

const SUPABASE_FIXTURE: &str = include_str!("../fixtures/supabase.sql");

/// The API roles of anyone holding a project key.
const API_ROLES: [&str; 3] = ["anon", "authenticated", "service_role"];

/// The role that plays Supabase's `postgres` (see tests/fixtures/supabase.sql):
/// the migrations and every statement of these tests run as it.
pub(crate) const OWNER: &str = "supabase_postgres";

/// `url` (a test database's), as `role` instead (`postgres` is the test
/// server's superuser).
pub(crate) fn url_as(url: &str, role: &str) -> String {
    let (_, rest) = url.split_once('@').unwrap();
    format!("postgresql://{role}@{rest}")
}

/// A fresh database set up as Supabase sets one up (as the bootstrap
/// superuser), then `legacy` (a legacy schema, or nothing) created by the
/// project's owner, not migrated. The returned database's URL connects as
/// [`OWNER`], a non-superuser.
pub(crate) fn supabase_project(legacy: Option<&str>) -> TestDb {
    // The roles are cluster-wide: one fixture at a time creates them.
    static ROLES: Mutex<()> = Mutex::new(());
    let mut db = TestDb::empty();
    {
        let _one_at_a_time = ROLES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        db.conn().batch_execute(SUPABASE_FIXTURE).unwrap();
    }
    db.url = url_as(&db.url, OWNER);
    if let Some(legacy) = legacy {
        db.conn().batch_execute(legacy).unwrap();
    }
    db
}

/// [`supabase_project`], migrated (as [`OWNER`]).
pub(crate) fn supabase_db(legacy: Option<&str>) -> TestDb {
    let db = supabase_project(legacy);
    machine_state::run_migrations(&mut db.conn()).unwrap();
    db
}

#[derive(QueryableByName, Debug)]
struct Value {
    #[diesel(sql_type = Text)]
    value: String,
}

fn values(conn: &mut PgConnection, query: &str) -> Vec<String> {
    sql_query(query)
        .load::<Value>(conn)
        .unwrap()
        .into_iter()
        .map(|v| v.value)
        .collect()
}

/// Run `statement` as `role` the way PostgREST does (`BEGIN; SET LOCAL ROLE
/// ...; statement; COMMIT`), returning its SQLSTATE (`00000` on success).
fn as_role(conn: &mut PgConnection, role: &str, statement: &str) -> String {
    // Created before the role switch: the API roles may not create functions.
    sqlstate_of(conn, "SELECT 1");
    conn.transaction(|conn| {
        conn.batch_execute(&format!("SET LOCAL ROLE {role}"))?;
        Ok::<_, diesel::result::Error>(sqlstate_of(conn, statement))
    })
    .unwrap()
}

#[test]
fn the_public_api_roles_can_change_nothing_and_call_no_transition() {
    let db = supabase_db(None);
    let conn = &mut db.conn();
    let idle = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap().id();
    let running = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .start(conn, Uuid::new_v4())
        .unwrap()
        .id();
    let before = snapshot(conn);
    let migrations_before = values(
        conn,
        "SELECT count(*)::text AS value FROM __diesel_schema_migrations",
    );
    let statements = [
        format!("SELECT * FROM machines WHERE id = '{idle}'"),
        format!("UPDATE machines SET status = 'error' WHERE id = '{idle}'"),
        format!("UPDATE machine_state SET current_state = 'error' WHERE machine_id = '{idle}'"),
        format!("DELETE FROM machines WHERE id = '{idle}'"),
        format!(
            "INSERT INTO machines (id, status) VALUES ('{}', 'idle')",
            Uuid::new_v4()
        ),
        format!(
            "INSERT INTO machine_state_transitions
                 (machine_id, from_state, to_state, operation_id, isolation_level)
             VALUES ('{idle}', 'idle', 'offline', gen_random_uuid(), 'repeatable read')"
        ),
        "DELETE FROM machine_state_transitions".to_owned(),
        "UPDATE machine_state_transitions SET to_state = 'idle'".to_owned(),
        "TRUNCATE machine_state_transitions".to_owned(),
        "SELECT nextval('machine_state_transitions_id_seq')".to_owned(),
        "DELETE FROM __diesel_schema_migrations".to_owned(),
        "INSERT INTO machine_state_private.application_grants
             VALUES ('anon', 'EXECUTE', 'FUNCTION', 'x')"
            .to_owned(),
        "SELECT * FROM machine_state_private.adopted_objects".to_owned(),
        format!("SELECT machine_state_transition('{idle}', 'idle', 'offline')"),
        format!("SELECT atomic_complete_machine_state('{running}')"),
        format!("SELECT atomic_error_machine_state('{running}', 'forged')"),
        format!(
            "SELECT atomic_processing_machine_state('{idle}', '{}')",
            Uuid::new_v4()
        ),
        format!(
            "SELECT atomic_update_machine_state(p_machine_id := '{idle}',
                 p_machine_status := 'offline', p_machine_state_current_state := 'offline')"
        ),
        "SELECT machine_state_relax_invariants()".to_owned(),
        "SELECT machine_state_enforce_invariants()".to_owned(),
        "SELECT machine_state_grant_application('anon')".to_owned(),
        "SELECT machine_state_check_machines_pair()".to_owned(),
        "SELECT machine_state_check_pairs(ARRAY[gen_random_uuid()], 'UPDATE', 'machines')"
            .to_owned(),
    ];
    for role in API_ROLES {
        for statement in &statements {
            assert_eq!(
                as_role(conn, role, statement),
                "42501",
                "as `{role}`: {statement}"
            );
        }
    }
    assert_eq!(snapshot(conn), before);
    assert_eq!(
        values(
            conn,
            "SELECT count(*)::text AS value FROM __diesel_schema_migrations"
        ),
        migrations_before
    );
    assert_consistent(conn, idle);
    assert_consistent(conn, running);
}

/// Supabase's database linter rules (splinter) 0011, 0013, 0028 and 0029, as
/// its documentation states them, written for this test: one `lint: object`
/// line per finding.
const LINTER: &str = "
    WITH system_schemas(nspname) AS (VALUES ('information_schema'), ('pg_catalog'),
        ('pg_toast'), ('auth'), ('storage'), ('extensions'), ('graphql'),
        ('graphql_public'), ('realtime'), ('vault'), ('pgbouncer'))
    SELECT '0011 function_search_path_mutable: ' || n.nspname || '.' || p.oid::regprocedure AS value
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN (SELECT nspname FROM system_schemas) AND n.nspname !~ '^pg_temp'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
      AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) c
                      WHERE c LIKE 'search_path=%')
    UNION ALL
    SELECT '0013 rls_disabled_in_public: ' || n.nspname || '.' || c.relname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND n.nspname = 'public' AND NOT c.relrowsecurity
    UNION ALL
    SELECT '00' || lint || ' ' || role || '_security_definer_function_executable: '
           || n.nspname || '.' || p.oid::regprocedure
    FROM (VALUES ('28', 'anon'), ('29', 'authenticated')) AS roles(lint, role)
    CROSS JOIN pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE p.prosecdef AND has_function_privilege(role, p.oid, 'EXECUTE')
      AND n.nspname NOT IN (SELECT nspname FROM system_schemas)
    ORDER BY 1";

#[test]
fn supabase_linter_rules_find_nothing_on_our_objects() {
    let db = supabase_db(None);
    let conn = &mut db.conn();
    assert_eq!(values(conn, LINTER), Vec::<String>::new());

    // The rules are able to fail: with `safe_public_api` reverted, the
    // bookkeeping is back in `public`, RLS is off, and the function that
    // down.sql creates again gets the API roles' default grants.
    while !machine_state::revert_last_migration(conn)
        .unwrap()
        .contains("000001")
    {}
    let findings = values(conn, LINTER);
    for expected in [
        "0013 rls_disabled_in_public: public.machine_state_transitions",
        "0013 rls_disabled_in_public: public.machine_state_adopted_objects",
        "0013 rls_disabled_in_public: public.__diesel_schema_migrations",
        "0028 anon_security_definer_function_executable: \
         public.atomic_update_machine_state(uuid,text,uuid,boolean,text)",
        "0029 authenticated_security_definer_function_executable: \
         public.atomic_update_machine_state(uuid,text,uuid,boolean,text)",
    ] {
        assert!(
            findings.iter().any(|f| f == expected),
            "{expected}: {findings:#?}"
        );
    }
}

#[test]
fn parked_legacy_functions_do_not_look_live_and_come_back_exactly() {
    // Before migrating: the legacy functions as shipped, flagged by the linter.
    let legacy = supabase_project(Some(LEGACY_FIXTURE));
    let db = supabase_db(Some(LEGACY_FIXTURE));
    let conn = &mut db.conn();
    let ours = |finding: &String| {
        !finding.ends_with(".machines")
            && !finding.ends_with(".machine_state")
            && !finding.ends_with(".users")
    };
    let findings: Vec<String> = values(conn, LINTER).into_iter().filter(ours).collect();
    assert_eq!(findings, Vec::<String>::new());
    let parked = values(
        conn,
        "SELECT p.oid::regprocedure::text AS value FROM pg_proc p
         WHERE p.pronamespace = 'machine_state_replaced'::regnamespace ORDER BY 1",
    );
    assert_eq!(parked.len(), 3, "{parked:?}");

    // Reverted, they are as shipped again: the whole schema dump compares
    // equal to the legacy database that was never migrated.
    machine_state::revert_all_migrations(conn).unwrap();
    assert_eq!(
        crate::support::schema_dump(&db),
        crate::support::schema_dump(&legacy)
    );
}

/// A connection as PostgREST's login role, `authenticator` (NOINHERIT: it
/// holds nothing until it switches role).
pub(crate) fn api_conn(db: &TestDb) -> PgConnection {
    PgConnection::establish(&url_as(&db.url, "authenticator")).unwrap()
}

/// The legacy Python wrappers' calls, replayed as PostgREST sends them for
/// `supabase.rpc(name, body)`: one transaction, the role switched with `SET
/// LOCAL ROLE` and the JWT's claims in `request.jwt.claims`, the function
/// called with the body's keys as named arguments. `conn` is PostgREST's own
/// login role's, `authenticator` ([`api_conn`]).
fn rpc(conn: &mut PgConnection, role: &str, call: &str) -> serde_json::Value {
    let text = conn
        .transaction(|conn| {
            conn.batch_execute(&format!(
                "SET LOCAL ROLE {role};
                 SELECT set_config('request.jwt.claims', '{{\"role\": \"{role}\"}}', true);"
            ))?;
            sql_query(format!("SELECT {call}::text AS value")).get_result::<Value>(conn)
        })
        .unwrap_or_else(|e| panic!("{call}: {e}"))
        .value;
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_legacy_rpcs_work_exactly_as_the_python_wrappers_call_them() {
    let db = supabase_db(None);
    let conn = &mut db.conn();
    // The services' key: the server-side `service_role`, granted as documented.
    conn.batch_execute("SELECT machine_state_grant_application('service_role')")
        .unwrap();
    let id = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap().id();
    let run = Uuid::new_v4();
    let owner = conn;
    let conn = &mut api_conn(&db);

    let started = rpc(
        conn,
        "service_role",
        &format!(
            r#"atomic_processing_machine_state("p_machine_id" := '{id}', "p_process_id" := '{run}')"#
        ),
    );
    assert_eq!(started["success"], true);
    assert_eq!(started["machine"]["status"], "processing");
    assert_eq!(started["machine"]["current_process_id"], run.to_string());
    assert_eq!(started["machine_state"]["current_state"], "processing");
    assert_eq!(started["machine_state"]["process_id"], run.to_string());
    assert_eq!(started["updated_at"], started["machine"]["updated_at"]);
    assert_consistent(owner, id);

    let failed = rpc(
        conn,
        "service_role",
        &format!(
            r#"atomic_error_machine_state("p_machine_id" := '{id}', "p_error_message" := 'pump tripped')"#
        ),
    );
    assert_eq!(failed["machine_state"]["current_state"], "error");
    assert_eq!(failed["machine_state"]["is_failure_mode"], true);
    assert_eq!(
        failed["machine_state"]["failure_description"],
        "Recipe execution error: pump tripped"
    );
    assert_consistent(owner, id);

    // The custom wrapper passes all seven parameters of the shipped function.
    let seven = |status: &str, process: Option<Uuid>, state: &str, failure: bool| {
        let process = process.map_or("NULL".to_owned(), |p| format!("'{p}'"));
        format!(
            r#"atomic_update_machine_state("p_machine_id" := '{id}',
                 "p_machine_status" := '{status}', "p_current_process_id" := {process},
                 "p_machine_state_current_state" := '{state}',
                 "p_machine_state_process_id" := {process},
                 "p_is_failure_mode" := {failure}, "p_failure_description" := NULL)"#
        )
    };
    let reset = rpc(conn, "service_role", &seven("idle", None, "idle", false));
    assert_eq!(reset["machine"]["status"], "idle");
    assert_eq!(reset["machine_state"]["current_state"], "idle");
    assert_eq!(reset["previous_state"], "error");
    assert_consistent(owner, id);

    let again = rpc(
        conn,
        "service_role",
        &seven("processing", Some(run), "processing", false),
    );
    assert_eq!(again["machine_state"]["process_id"], run.to_string());
    let completed = rpc(
        conn,
        "service_role",
        &format!(r#"atomic_complete_machine_state("p_machine_id" := '{id}')"#),
    );
    assert_eq!(completed["machine"]["status"], "idle");
    assert_eq!(
        completed["machine_state"]["process_id"],
        serde_json::Value::Null
    );
    assert_consistent(owner, id);

    // Positional notation, as SQL callers write it.
    let positional = rpc(
        conn,
        "service_role",
        &format!(
            "atomic_update_machine_state('{id}', 'offline', NULL, 'offline', NULL, false, NULL)"
        ),
    );
    assert_eq!(positional["machine"]["status"], "offline");

    // Halves that disagree are refused (MS005) and change nothing.
    let before = snapshot(owner);
    let other = Uuid::new_v4();
    for call in [
        seven("idle", None, "processing", false),
        seven("idle", None, "offline", false),
        format!(
            "atomic_update_machine_state('{id}', 'processing', '{run}', 'processing', '{other}')"
        ),
        format!("atomic_update_machine_state('{id}', 'processing', '{run}', 'processing', NULL)"),
        format!("atomic_update_machine_state('{id}', 'error', NULL, 'error', NULL, false, 'x')"),
    ] {
        assert_eq!(
            as_role(conn, "service_role", &format!("SELECT {call}")),
            "MS005",
            "{call}"
        );
    }
    assert_eq!(snapshot(owner), before);
}

#[test]
fn doctor_reports_exposures_on_the_fixture_and_nothing_after_migrate() {
    // A fresh project: nothing exposed once migrated.
    let db = supabase_db(None);
    let conn = &mut db.conn();
    let report = machine_state::doctor::doctor(conn).unwrap();
    assert_eq!(report.exposures, vec![], "{report:#?}");
    assert_eq!(report.enforcement, Some(false));

    // A stray grant of each kind is found.
    conn.batch_execute(
        "GRANT UPDATE ON machine_state TO anon;
         GRANT EXECUTE ON FUNCTION machine_state_transition(uuid, text, text, uuid, text, uuid, text)
             TO authenticated;
         ALTER TABLE machine_state_transitions DISABLE ROW LEVEL SECURITY;
         ALTER FUNCTION machine_state_relax_invariants() RESET search_path;",
    )
    .unwrap();
    let kinds: Vec<(ExposureKind, Option<String>)> = machine_state::doctor::doctor(conn)
        .unwrap()
        .exposures
        .into_iter()
        .map(|e| (e.kind, e.role))
        .collect();
    assert_eq!(
        kinds,
        [
            (ExposureKind::DirectWrite, Some("anon".to_owned())),
            (ExposureKind::MutableSearchPath, None),
            (ExposureKind::RlsDisabled, None),
            (
                ExposureKind::SecurityDefinerExecutable,
                Some("authenticated".to_owned())
            ),
        ]
    );

    // A legacy project: the legacy grants on the adopted tables are kept and
    // reported, for operators to retire; once retired, nothing is exposed.
    let legacy = supabase_db(Some(LEGACY_FIXTURE));
    let conn = &mut legacy.conn();
    let report = machine_state::doctor::doctor(conn).unwrap();
    for role in ["anon", "authenticated", "service_role", "legacy_app"] {
        assert!(
            report
                .exposures
                .iter()
                .any(|e| e.kind == ExposureKind::DirectWrite
                    && e.role.as_deref() == Some(role)
                    && e.object == "public.machines"),
            "{role}: {report:#?}"
        );
    }
    assert!(
        report
            .exposures
            .iter()
            .any(|e| e.kind == ExposureKind::RlsDisabled && e.object == "public.machines")
    );
    conn.batch_execute(
        "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON machines, machine_state
             FROM anon, authenticated, service_role, legacy_app;
         REVOKE ALL ON users FROM anon, authenticated, service_role;
         ALTER TABLE machines ENABLE ROW LEVEL SECURITY;
         ALTER TABLE machine_state ENABLE ROW LEVEL SECURITY;
         ALTER TABLE users ENABLE ROW LEVEL SECURITY;",
    )
    .unwrap();
    let report = machine_state::doctor::doctor(conn).unwrap();
    assert_eq!(report.exposures, vec![], "{report:#?}");
}

#[test]
fn doctor_as_a_command_exits_with_1_when_anything_is_exposed() {
    let db = supabase_db(None);
    let doctor = |db: &TestDb| {
        assert_cmd::Command::cargo_bin("machine-state")
            .unwrap()
            .args(["--database-url", &db.url, "doctor", "--json"])
            .output()
            .unwrap()
    };
    // Fresh: nothing exposed, but the services are locked out until granted.
    let locked = doctor(&db);
    assert_eq!(locked.status.code(), Some(1), "{locked:?}");
    let report: serde_json::Value = serde_json::from_slice(&locked.stdout).unwrap();
    assert_eq!(report["exposures"], serde_json::json!([]));
    assert_eq!(report["locked_out"]["role"], "service_role");
    machine_state::doctor::grant_application(&mut db.conn(), "service_role").unwrap();
    let clean = doctor(&db);
    assert_eq!(clean.status.code(), Some(0), "{clean:?}");
    let report: serde_json::Value = serde_json::from_slice(&clean.stdout).unwrap();
    assert_eq!(report["exposures"], serde_json::json!([]));
    assert_eq!(report["locked_out"], serde_json::Value::Null);

    db.conn()
        .batch_execute("GRANT DELETE ON machine_state_transitions TO anon")
        .unwrap();
    let exposed = doctor(&db);
    assert_eq!(exposed.status.code(), Some(1), "{exposed:?}");
    let report: serde_json::Value = serde_json::from_slice(&exposed.stdout).unwrap();
    assert_eq!(report["exposures"][0]["kind"], "direct_write");
    assert_eq!(report["exposures"][0]["role"], "anon");
    assert_eq!(
        report["exposures"][0]["object"],
        "public.machine_state_transitions"
    );
}

#[test]
fn the_fixture_is_the_platform_as_it_is() {
    let db = supabase_project(None);
    let conn = &mut db.conn();
    let attributes = values(
        conn,
        "SELECT format('%s super=%s createdb=%s createrole=%s login=%s replication=%s \
                        bypassrls=%s inherit=%s', rolname, rolsuper::text, rolcreatedb::text,
                       rolcreaterole::text, rolcanlogin::text, rolreplication::text,
                       rolbypassrls::text, rolinherit::text) AS value
         FROM pg_roles
         WHERE rolname IN ('supabase_postgres', 'anon', 'authenticated', 'service_role',
                           'authenticator')
         ORDER BY rolname",
    );
    assert_eq!(
        attributes,
        [
            "anon super=false createdb=false createrole=false login=false replication=false \
             bypassrls=false inherit=false",
            "authenticated super=false createdb=false createrole=false login=false \
             replication=false bypassrls=false inherit=false",
            "authenticator super=false createdb=false createrole=false login=true \
             replication=false bypassrls=false inherit=false",
            "service_role super=false createdb=false createrole=false login=false \
             replication=false bypassrls=true inherit=false",
            "supabase_postgres super=false createdb=true createrole=true login=true \
             replication=true bypassrls=true inherit=true",
        ]
    );
    // The migrations run as the database's owner, not as a superuser, and
    // what it creates in `public` is granted to the API roles by name.
    assert_eq!(
        values(
            conn,
            "SELECT format('%s owns %s', current_user, pg_get_userbyid(datdba)) AS value
             FROM pg_database WHERE datname = current_database()"
        ),
        ["supabase_postgres owns supabase_postgres"]
    );
    conn.batch_execute("CREATE TABLE probe (x int)").unwrap();
    assert_eq!(
        values(
            conn,
            "SELECT string_agg(r, ',' ORDER BY r) AS value FROM unnest(ARRAY['anon',
                 'authenticated', 'service_role']) r
             WHERE has_table_privilege(r, 'probe', 'INSERT, UPDATE, DELETE, TRUNCATE')"
        ),
        ["anon,authenticated,service_role"]
    );
    for (role, member_of) in [
        ("supabase_postgres", "anon"),
        ("supabase_postgres", "service_role"),
        ("authenticator", "authenticated"),
    ] {
        assert_eq!(
            values(
                conn,
                &format!("SELECT pg_has_role('{role}', '{member_of}', 'MEMBER')::text AS value")
            ),
            ["true"]
        );
    }
    assert_eq!(
        values(
            conn,
            "SELECT string_agg(nspname, ',' ORDER BY nspname) AS value FROM pg_namespace
             WHERE nspname IN ('auth', 'storage', 'extensions', 'realtime', 'graphql_public')"
        ),
        ["auth,extensions,graphql_public,realtime,storage"]
    );
    assert_eq!(
        values(
            conn,
            "SELECT string_agg(pg_get_userbyid(s.setrole) || ':' || c, ' ' ORDER BY 1) AS value
             FROM pg_db_role_setting s CROSS JOIN LATERAL unnest(s.setconfig) c
             WHERE pg_get_userbyid(s.setrole) IN ('anon', 'authenticated', 'authenticator')"
        ),
        [
            "anon:statement_timeout=3s authenticated:statement_timeout=8s \
          authenticator:pgrst.db_schemas=public, graphql_public"
        ]
    );
}
