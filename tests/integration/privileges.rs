//! Least privilege (migration 000005): an application role reads the tables
//! and runs transitions only through the SQL functions (SECURITY DEFINER,
//! search_path pinned); it cannot write the tables or the history itself, and
//! no role it was not granted to can call a function that writes.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Bool, Text};
use machine_state::history::history;
use machine_state::{AnyMachine, Error, Idle, Machine, Offline, State, WritePath, find_operation};
use uuid::Uuid;

use crate::support::{TestDb, assert_consistent, create_role, snapshot, sqlstate_of};

/// The functions the application role runs transitions through.
const TRANSITION_FUNCTIONS: [&str; 6] = [
    "machine_state_transition(uuid, text, text, uuid, text, uuid, text)",
    "atomic_update_machine_state(uuid, text, uuid, text, uuid, boolean, text)",
    "atomic_complete_machine_state(uuid)",
    "atomic_error_machine_state(uuid, text)",
    "atomic_processing_machine_state(uuid, uuid)",
    "atomic_stop_machine_state(uuid, uuid)",
];

const TABLES: [&str; 3] = ["machines", "machine_state", "machine_state_transitions"];

#[derive(QueryableByName, Debug)]
struct Function {
    #[diesel(sql_type = Text)]
    signature: String,
    #[diesel(sql_type = Bool)]
    security_definer: bool,
    #[diesel(sql_type = Bool)]
    pinned: bool,
    #[diesel(sql_type = Bool)]
    public_may_execute: bool,
}

/// Every function of the schema, as the catalog describes it.
fn functions(conn: &mut PgConnection) -> Vec<Function> {
    sql_query(
        "SELECT p.oid::regprocedure::text AS signature,
                p.prosecdef AS security_definer,
                coalesce('search_path=pg_catalog, public, pg_temp' = ANY (p.proconfig), false)
                    AS pinned,
                has_function_privilege('public', p.oid, 'EXECUTE') AS public_may_execute
         FROM pg_proc p
         WHERE p.pronamespace = 'public'::regnamespace
         ORDER BY 1",
    )
    .load(conn)
    .unwrap()
}

fn holds(conn: &mut PgConnection, check: &str) -> bool {
    #[derive(QueryableByName)]
    struct Holds {
        #[diesel(sql_type = Bool)]
        holds: bool,
    }
    sql_query(format!("SELECT {check} AS holds"))
        .get_result::<Holds>(conn)
        .unwrap()
        .holds
}

/// A migrated database with an application role set up as documented.
fn with_application_role() -> (TestDb, String) {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let app = create_role(conn, "factory_app");
    conn.batch_execute(&format!("SELECT machine_state_grant_application('{app}')"))
        .unwrap();
    (db, app)
}

#[test]
fn every_function_pins_its_search_path_and_public_may_execute_none() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let functions = functions(conn);
    assert!(functions.len() >= 13, "{functions:?}");
    for function in &functions {
        assert!(function.pinned, "{function:?}");
        assert!(!function.public_may_execute, "{function:?}");
    }
    let definers: Vec<&str> = functions
        .iter()
        .filter(|f| f.security_definer)
        .map(|f| f.signature.as_str())
        .collect();
    assert_eq!(
        definers,
        [
            "atomic_complete_machine_state(uuid)",
            "atomic_error_machine_state(uuid,text)",
            "atomic_processing_machine_state(uuid,uuid)",
            "atomic_stop_machine_state(uuid,uuid)",
            "atomic_update_machine_state(uuid,text,uuid,text,uuid,boolean,text)",
            "machine_state_check_machine_state_pair()",
            "machine_state_check_machines_pair()",
            "machine_state_transition(uuid,text,text,uuid,text,uuid,text)",
        ],
        "only the functions that write (and the triggers that only read)"
    );
}

#[test]
fn the_application_role_may_read_and_run_transitions_and_nothing_else() {
    let (db, app) = with_application_role();
    let conn = &mut db.conn();
    let stranger = create_role(conn, "stranger");
    for table in TABLES {
        assert!(holds(
            conn,
            &format!("has_table_privilege('{app}', '{table}', 'SELECT')")
        ));
        for privilege in [
            "INSERT",
            "UPDATE",
            "DELETE",
            "TRUNCATE",
            "REFERENCES",
            "TRIGGER",
        ] {
            assert!(
                !holds(
                    conn,
                    &format!("has_table_privilege('{app}', '{table}', '{privilege}')")
                ),
                "{app} may {privilege} {table}"
            );
        }
        assert!(!holds(
            conn,
            &format!("has_table_privilege('{stranger}', '{table}', 'SELECT')")
        ));
    }
    for function in functions(conn) {
        let may = |role: &str, conn: &mut PgConnection| {
            holds(
                conn,
                &format!(
                    "has_function_privilege('{role}', '{}', 'EXECUTE')",
                    function.signature
                ),
            )
        };
        let transition = TRANSITION_FUNCTIONS
            .iter()
            .any(|f| f.replace(", ", ",") == function.signature);
        assert_eq!(may(&app, conn), transition, "{app}: {function:?}");
        assert!(!may(&stranger, conn), "{stranger}: {function:?}");
    }
}

#[test]
fn the_application_role_cannot_write_the_tables_or_change_the_setup() {
    let (db, app) = with_application_role();
    let conn = &mut db.conn();
    let id = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .id();
    let before = snapshot(conn);
    conn.batch_execute(&format!("SET ROLE {app}")).unwrap();
    for statement in [
        format!("UPDATE machines SET status = 'idle' WHERE id = '{id}'"),
        format!("UPDATE machine_state SET current_state = 'idle' WHERE machine_id = '{id}'"),
        format!("DELETE FROM machine_state WHERE machine_id = '{id}'"),
        format!("DELETE FROM machines WHERE id = '{id}'"),
        format!(
            "INSERT INTO machines (id, status) VALUES ('{}', 'idle')",
            Uuid::new_v4()
        ),
        format!(
            "INSERT INTO machine_state_transitions (machine_id, to_state, operation_id)
             VALUES ('{id}', 'idle', gen_random_uuid())"
        ),
        "UPDATE machine_state_transitions SET to_state = 'idle'".to_owned(),
        "DELETE FROM machine_state_transitions".to_owned(),
        "TRUNCATE machine_state_transitions".to_owned(),
        "SELECT machine_state_relax_invariants()".to_owned(),
        "SELECT machine_state_enforce_invariants()".to_owned(),
        format!("SELECT machine_state_grant_application('{app}')"),
        format!("SELECT machine_state_revoke_application('{app}')"),
        "SELECT machine_state_transition_result(NULL::machine_state_transitions)".to_owned(),
    ] {
        assert_eq!(sqlstate_of(conn, &statement), "42501", "{statement}");
    }
    conn.batch_execute("RESET ROLE").unwrap();
    assert_eq!(snapshot(conn), before);
}

#[test]
fn the_application_role_runs_transitions_through_the_sql_functions_and_the_crate() {
    let (db, app) = with_application_role();
    let conn = &mut db.conn();
    // Registering machines stays with the owner; enforcement on, so the
    // SECURITY DEFINER trigger runs for the application role's writes too.
    let sql_id = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap().id();
    let rust_id = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .id();
    conn.batch_execute("SELECT machine_state_enforce_invariants()")
        .unwrap();
    conn.batch_execute(&format!("SET ROLE {app}")).unwrap();

    conn.batch_execute(&format!(
        "SELECT machine_state_transition('{sql_id}', 'idle', 'processing', '{run}');
         SELECT atomic_complete_machine_state('{sql_id}');
         SELECT atomic_processing_machine_state('{sql_id}', '{}');
         SELECT atomic_stop_machine_state('{sql_id}');
         SELECT atomic_processing_machine_state('{sql_id}', '{}');
         SELECT atomic_error_machine_state('{sql_id}', 'pump tripped');
         SELECT atomic_update_machine_state('{sql_id}', 'offline');",
        Uuid::new_v4(),
        Uuid::new_v4(),
        run = Uuid::new_v4(),
    ))
    .unwrap();

    // Through the crate: reads, and transitions on the SQL-function path.
    let AnyMachine::Offline(machine) = AnyMachine::load(conn, rust_id).unwrap() else {
        panic!("expected an offline machine");
    };
    let operation = Uuid::new_v4();
    let processing = machine
        .with_write_path(WritePath::SqlFunction)
        .bring_online(conn)
        .unwrap()
        .with_operation_id(operation)
        .start(conn, Uuid::new_v4())
        .unwrap();
    assert!(find_operation(conn, operation).unwrap().is_some());
    let idle = processing.complete(conn).unwrap();
    assert_eq!(history(conn, rust_id).unwrap().len(), 4);

    // The statement path writes the tables itself: the database refuses it
    // for this role, and nothing changes.
    let before = snapshot(conn);
    let refused = idle
        .with_write_path(WritePath::Statement)
        .take_offline(conn)
        .unwrap_err();
    match &refused.error {
        Error::Database(e) => assert!(e.to_string().contains("permission denied"), "{e}"),
        other => panic!("expected a permission error, got {other:?}"),
    }
    assert_eq!(snapshot(conn), before);

    conn.batch_execute("RESET ROLE").unwrap();
    assert_consistent(conn, sql_id);
    assert_consistent(conn, rust_id);
    assert_eq!(
        AnyMachine::load(conn, sql_id).unwrap().state(),
        State::Offline
    );
}

#[test]
fn revoking_the_application_role_takes_back_exactly_what_was_granted() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let app = create_role(conn, "factory_app");
    // A grant the role held before (a legacy one) is not machine-state's to
    // take back.
    conn.batch_execute(&format!("GRANT SELECT ON machines TO {app}"))
        .unwrap();
    let acl = |conn: &mut PgConnection| -> Vec<String> {
        #[derive(QueryableByName)]
        struct Acl {
            #[diesel(sql_type = Text)]
            acl: String,
        }
        // The effective ACLs (NULL stands for the built-in default: a grant
        // and its revoke leave the default written out, which is the same).
        sql_query(
            "SELECT coalesce(relacl, acldefault('r', relowner))::text AS acl FROM pg_class
             WHERE relname IN ('machines', 'machine_state', 'machine_state_transitions',
                               'machine_state_transitions_default')
             UNION ALL SELECT coalesce(proacl, acldefault('f', proowner))::text FROM pg_proc
             WHERE pronamespace = 'public'::regnamespace
             UNION ALL SELECT coalesce(nspacl, acldefault('n', nspowner))::text FROM pg_namespace
             WHERE nspname = 'public'
             ORDER BY 1",
        )
        .load::<Acl>(conn)
        .unwrap()
        .into_iter()
        .map(|a| a.acl)
        .collect()
    };
    let before = acl(conn);

    #[derive(QueryableByName)]
    struct Statement {
        #[diesel(sql_type = Text)]
        statement: String,
    }
    let granted: Vec<String> = sql_query(format!(
        "SELECT statement FROM machine_state_grant_application('{app}') AS statement"
    ))
    .load::<Statement>(conn)
    .unwrap()
    .into_iter()
    .map(|s| s.statement)
    .collect();
    // the schema, 3 tables and the history's default partition (read by name,
    // migration 2026-12-05-300000), diesel's table, 6 functions: less the one
    // held before
    assert_eq!(granted.len(), 11, "{granted:?}");
    assert!(
        !granted.iter().any(|g| g.contains("ON TABLE machines ")),
        "{granted:?}"
    );
    assert!(
        sql_query(format!(
            "SELECT statement FROM machine_state_grant_application('{app}') AS statement"
        ))
        .load::<Statement>(conn)
        .unwrap()
        .is_empty(),
        "granting twice grants nothing more"
    );

    let revoked = sql_query(format!(
        "SELECT statement FROM machine_state_revoke_application('{app}') AS statement"
    ))
    .load::<Statement>(conn)
    .unwrap();
    assert_eq!(revoked.len(), 11);
    assert_eq!(acl(conn), before);
    assert!(holds(
        conn,
        &format!("has_table_privilege('{app}', 'machines', 'SELECT')")
    ));
}

#[test]
fn the_operator_script_creates_and_grants_the_application_role() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    // A role name no other test uses, in mixed case (quoted identifiers).
    let app = format!("Factory_App_{}", db.name);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/sql/roles.sql");
    for _ in 0..2 {
        let output = std::process::Command::new(crate::support::server().bin_dir().join("psql"))
            .args([
                "-X",
                "-q",
                "-v",
                &format!("app={app}"),
                "-f",
                script,
                "--dbname",
            ])
            .arg(&db.url)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // (has_*_privilege take the role's name as it is, unquoted.)
    let role = app;
    assert!(holds(
        conn,
        &format!("has_table_privilege('{role}', 'machines', 'SELECT')")
    ));
    assert!(!holds(
        conn,
        &format!("has_table_privilege('{role}', 'machines', 'UPDATE')")
    ));
    assert!(holds(
        conn,
        &format!(
            "has_function_privilege('{role}', '{}', 'EXECUTE')",
            TRANSITION_FUNCTIONS[0]
        )
    ));
}

/// The migration that gave `machine_state_transition` its verb (a new
/// signature) and added the stopper's function.
const VERBS_MIGRATION: &str = "2026-12-05-100000";

/// Revert migrations, newest first, up to and including [`VERBS_MIGRATION`].
fn revert_through_the_verbs_migration(conn: &mut PgConnection) {
    loop {
        let reverted = machine_state::revert_last_migration(conn).unwrap();
        if reverted
            .replace('-', "")
            .starts_with(&VERBS_MIGRATION.replace('-', ""))
        {
            return;
        }
    }
}

#[test]
fn roles_granted_before_the_verbs_migration_keep_their_grants_through_it_and_back() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    revert_through_the_verbs_migration(conn);
    let app = create_role(conn, "factory_app");
    let stranger = create_role(conn, "stranger");
    let granted = sql_query(format!(
        "SELECT statement FROM machine_state_grant_application('{app}') AS statement"
    ))
    .execute(conn)
    .unwrap();
    let old = "machine_state_transition(uuid, text, text, uuid, text, uuid)";
    let new = "machine_state_transition(uuid, text, text, uuid, text, uuid, text)";
    let stop = "atomic_stop_machine_state(uuid, uuid)";
    let may = |conn: &mut PgConnection, role: &str, function: &str| {
        holds(
            conn,
            &format!("has_function_privilege('{role}', '{function}', 'EXECUTE')"),
        )
    };
    assert!(may(conn, &app, old));

    machine_state::run_migrations(conn).unwrap();
    assert!(may(conn, &app, new), "the grant moves to the new signature");
    assert!(
        may(conn, &app, stop),
        "the stopper's function is granted too"
    );
    assert!(!may(conn, &stranger, new) && !may(conn, &stranger, stop));
    let id = Machine::<Idle>::create(conn, Uuid::new_v4())
        .unwrap()
        .start(conn, Uuid::new_v4())
        .unwrap()
        .id();
    conn.batch_execute(&format!(
        "SET ROLE {app}; SELECT atomic_stop_machine_state('{id}'); RESET ROLE;"
    ))
    .unwrap();
    assert_eq!(
        history(conn, id).unwrap().last().unwrap().verb.as_deref(),
        Some("stop")
    );

    revert_through_the_verbs_migration(conn);
    assert!(may(conn, &app, old), "and back to the old signature");
    let revoked = sql_query(format!(
        "SELECT statement FROM machine_state_revoke_application('{app}') AS statement"
    ))
    .execute(conn)
    .unwrap();
    assert_eq!(revoked, granted, "exactly what was granted, no more");
    assert!(!may(conn, &app, old));
}
