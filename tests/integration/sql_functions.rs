//! The SQL functions mirror the Rust write path: same rows for the same
//! operations, SQLSTATEs preserved, and the legacy names working.

use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Text, Uuid as SqlUuid};
use machine_state::{Action, AnyMachine, Machine, Offline};
use uuid::Uuid;

use crate::support::{TestDb, assert_consistent, sqlstate_of};

#[derive(QueryableByName, Debug, PartialEq, Eq)]
struct Row {
    #[diesel(sql_type = Text)]
    value: String,
}

/// Both rows and the history of a machine, without ids, times and operation
/// ids (which differ between runs), but with the checks on times that must
/// hold.
fn rows(conn: &mut PgConnection, id: Uuid) -> Vec<String> {
    sql_query(
        "SELECT concat_ws(' | ', m.status, m.current_process_id, s.current_state, s.process_id,
                          s.is_failure_mode, s.failure_component, s.failure_description,
                          s.state_since = m.updated_at, s.updated_at = m.updated_at) AS value
         FROM machines m JOIN machine_state s ON s.machine_id = m.id WHERE m.id = $1
         UNION ALL
         SELECT * FROM (
             SELECT concat_ws(' | ', t.from_state, t.to_state, t.process_id, t.description,
                              t.kind, t.isolation_level, t.verb)
             FROM machine_state_transitions t WHERE t.machine_id = $1 ORDER BY t.id
         ) history",
    )
    .bind::<SqlUuid, _>(id)
    .load::<Row>(conn)
    .unwrap()
    .into_iter()
    .map(|r| r.value)
    .collect()
}

fn script() -> Vec<Action> {
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    vec![
        Action::BringOnline,
        Action::Start(a),
        Action::Complete,
        Action::TakeOffline,
        Action::Start(b),
        Action::Fail("it's a $$ 'quoted' failure".into()),
        Action::Reset,
        Action::Start(c),
        Action::Stop,
        Action::TakeOffline,
    ]
}

#[test]
fn the_sql_function_and_the_rust_path_leave_identical_rows() {
    let script = script();
    let machine_id = Uuid::new_v4();

    let rust_db = TestDb::new();
    let conn = &mut rust_db.pool().get().unwrap();
    let mut machine = AnyMachine::Offline(Machine::<Offline>::create(conn, machine_id).unwrap());
    for action in &script {
        machine = machine.perform(conn, action).unwrap();
    }
    let by_rust = rows(conn, machine_id);

    let sql_db = TestDb::new();
    let pool = sql_db.pool();
    let conn = &mut pool.get().unwrap();
    Machine::<Offline>::create(conn, machine_id).unwrap();
    let mut from = "offline".to_owned();
    let mut process: Option<Uuid> = None;
    for action in &script {
        let (to, description) = match action {
            Action::Start(p) => {
                process = Some(*p);
                ("processing", None)
            }
            Action::Fail(d) => ("error", Some(d.clone())),
            other => (other.target().as_str(), None),
        };
        // The verb named, as the Rust path records it (`processing -> idle`
        // is a `complete` or a `stop`).
        sql_query(
            "SELECT to_state AS value
             FROM machine_state_transition($1, $2, $3, $4, $5, NULL, $6)",
        )
        .bind::<SqlUuid, _>(machine_id)
        .bind::<Text, _>(&from)
        .bind::<Text, _>(to)
        .bind::<diesel::sql_types::Nullable<SqlUuid>, _>(process)
        .bind::<diesel::sql_types::Nullable<Text>, _>(description)
        .bind::<Text, _>(action.verb().as_str())
        .get_result::<Row>(conn)
        .unwrap();
        if from == "processing" {
            process = None;
        }
        from = to.to_owned();
    }
    let by_sql = rows(conn, machine_id);

    assert_eq!(by_sql, by_rust);
    assert_consistent(conn, machine_id);
}

#[test]
fn sql_refusals_keep_their_own_sqlstates_and_change_nothing() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let idle = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .bring_online(conn)
        .unwrap();
    let id = idle.id();
    let before = crate::support::snapshot(conn);
    let cases = [
        // The legacy calls decide on the row they locked: from `idle`,
        // completing or stopping is illegal (not a conflict); a stop that
        // names its run claims `processing`, and that run: a conflict.
        (
            format!("SELECT atomic_complete_machine_state('{id}')"),
            "MS001",
        ),
        (format!("SELECT atomic_stop_machine_state('{id}')"), "MS001"),
        (
            format!(
                "SELECT atomic_stop_machine_state('{id}', '{}')",
                Uuid::new_v4()
            ),
            "MS002",
        ),
        (
            format!("SELECT machine_state_transition('{id}', 'idle', 'error', NULL, 'x')"),
            "MS001",
        ),
        (
            format!("SELECT atomic_complete_machine_state('{}')", Uuid::new_v4()),
            "MS003",
        ),
        (
            format!("SELECT machine_state_transition('{id}', 'idle', 'processing', NULL)"),
            "MS005",
        ),
        (
            format!("SELECT atomic_error_machine_state('{id}', repeat('x', 10 * 1024 * 1024))"),
            "MS005",
        ),
        (
            format!("SELECT atomic_update_machine_state('{id}', 'running')"),
            "MS001",
        ),
    ];
    for (statement, expected) in cases {
        assert_eq!(sqlstate_of(conn, &statement), expected, "{statement}");
    }
    assert_eq!(crate::support::snapshot(conn), before);
}

#[derive(QueryableByName, Debug)]
struct Json {
    #[diesel(sql_type = Text)]
    result: String,
}

fn call_json(conn: &mut PgConnection, statement: &str) -> serde_json::Value {
    let row: Json = sql_query(format!("SELECT ({statement})::text AS result"))
        .get_result(conn)
        .unwrap();
    serde_json::from_str(&row.result).unwrap()
}

#[test]
fn the_legacy_rpc_names_work_as_the_python_wrappers_call_them() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .bring_online(conn)
        .unwrap()
        .id();
    let run = Uuid::new_v4();

    let started = call_json(
        conn,
        &format!("atomic_processing_machine_state('{id}', '{run}')"),
    );
    assert_eq!(started["success"], true);
    assert_eq!(started["previous_state"], "idle");
    assert_eq!(started["new_state"], "processing");
    assert_eq!(started["process_id"], run.to_string());
    assert_eq!(started["verb"], "start");
    assert_consistent(conn, id);

    let completed = call_json(conn, &format!("atomic_complete_machine_state('{id}')"));
    assert_eq!(completed["new_state"], "idle");
    assert_eq!(completed["verb"], "complete");
    assert_consistent(conn, id);

    // The legacy stopper: the same states as a completion, told apart by
    // the verb; fenced when it names the run.
    let aborted = Uuid::new_v4();
    call_json(
        conn,
        &format!("atomic_processing_machine_state('{id}', '{aborted}')"),
    );
    let stopped = call_json(
        conn,
        &format!(
            r#"atomic_stop_machine_state("p_machine_id" := '{id}', "p_process_id" := '{aborted}')"#
        ),
    );
    assert_eq!(stopped["previous_state"], "processing");
    assert_eq!(stopped["new_state"], "idle");
    assert_eq!(stopped["process_id"], aborted.to_string());
    assert_eq!(stopped["verb"], "stop");
    assert_consistent(conn, id);
    call_json(
        conn,
        &format!(
            "atomic_processing_machine_state('{id}', '{}')",
            Uuid::new_v4()
        ),
    );
    let stopped = call_json(conn, &format!("atomic_stop_machine_state('{id}')"));
    assert_eq!(stopped["verb"], "stop");
    assert_consistent(conn, id);

    call_json(
        conn,
        &format!(
            "atomic_processing_machine_state('{id}', '{}')",
            Uuid::new_v4()
        ),
    );
    let failed = call_json(
        conn,
        &format!("atomic_error_machine_state('{id}', 'pump tripped')"),
    );
    assert_eq!(failed["new_state"], "error");
    assert_eq!(failed["verb"], "fail");
    assert_consistent(conn, id);

    let reset = call_json(
        conn,
        &format!(
            "atomic_update_machine_state(p_machine_id => '{id}', p_machine_status => 'idle',
                     p_machine_state_current_state => 'idle')"
        ),
    );
    assert_eq!(reset["previous_state"], "error");
    assert_eq!(reset["new_state"], "idle");
    assert_eq!(reset["verb"], "reset");
    assert_consistent(conn, id);
    assert_eq!(
        AnyMachine::load(conn, id).unwrap().state(),
        machine_state::State::Idle
    );
    let verbs: Vec<Option<String>> = machine_state::history::history(conn, id)
        .unwrap()
        .into_iter()
        .map(|entry| entry.verb)
        .collect();
    let verbs: Vec<Option<&str>> = verbs.iter().map(Option::as_deref).collect();
    assert_eq!(
        verbs,
        [
            "create",
            "bring_online",
            "start",
            "complete",
            "start",
            "stop",
            "start",
            "stop",
            "start",
            "fail",
            "reset"
        ]
        .map(Some)
    );
}

#[test]
fn hostile_input_through_the_sql_functions_is_refused_with_its_sqlstate_and_changes_nothing() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let run = Uuid::new_v4();
    let id = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .start(conn, run)
        .unwrap()
        .id();
    let created_by = machine_state::history::history(conn, id).unwrap()[0].operation_id;
    let (unknown, other_run) = (Uuid::new_v4(), Uuid::new_v4());
    let before = crate::support::snapshot(conn);
    let cases = [
        // NUL bytes: PostgreSQL refuses them in text before any function runs.
        (
            format!("SELECT atomic_error_machine_state('{id}', E'pump\\000tripped')"),
            "22021",
        ),
        (
            format!(
                "SELECT machine_state_transition('{id}', 'processing', 'error', '{run}', E'\\000')"
            ),
            "22021",
        ),
        // Too long, by one character and by ten million.
        (
            format!(
                "SELECT machine_state_transition('{id}', 'processing', 'error', '{run}',
                                                 repeat('x', 4097))"
            ),
            "MS005",
        ),
        (
            format!(
                "SELECT atomic_update_machine_state('{id}', 'error', NULL, 'error', NULL, true,
                                                    repeat('é', 10 * 1024 * 1024))"
            ),
            "MS005",
        ),
        // Nothing but whitespace is no description (as the crate and the
        // audit see it).
        (
            format!("SELECT atomic_error_machine_state('{id}', E' \\t\\r\\n')"),
            "MS005",
        ),
        (
            format!("SELECT atomic_error_machine_state('{id}', U&' \\3000\\00A0\\2003')"),
            "MS005",
        ),
        // Unknown, missing and malformed ids.
        (
            format!("SELECT machine_state_transition('{unknown}', 'idle', 'offline')"),
            "MS003",
        ),
        (
            format!("SELECT atomic_processing_machine_state('{unknown}', '{other_run}')"),
            "MS003",
        ),
        (
            format!("SELECT atomic_error_machine_state('{unknown}', 'pump tripped')"),
            "MS003",
        ),
        (
            format!("SELECT atomic_update_machine_state('{unknown}', 'idle')"),
            "MS003",
        ),
        (
            "SELECT machine_state_transition(NULL, 'idle', 'offline')".to_owned(),
            "MS005",
        ),
        (
            "SELECT atomic_complete_machine_state('not-a-uuid')".to_owned(),
            "22P02",
        ),
        // Wrong states, a stale run, states that do not exist. A legacy
        // call names no source state: it decides on the row it locked, so a
        // start of a processing machine is illegal from the state found.
        (
            format!("SELECT atomic_processing_machine_state('{id}', '{other_run}')"),
            "MS001",
        ),
        (
            format!("SELECT atomic_stop_machine_state('{id}', '{other_run}')"),
            "MS002",
        ),
        (
            format!(
                "SELECT machine_state_transition('{id}', 'processing', 'idle', '{run}',
                                                     NULL, NULL, 'reset')"
            ),
            "MS001",
        ),
        (
            format!("SELECT machine_state_transition('{id}', 'idle', 'offline')"),
            "MS002",
        ),
        (
            format!("SELECT machine_state_transition('{id}', 'processing', 'idle', '{other_run}')"),
            "MS002",
        ),
        (
            format!("SELECT machine_state_transition('{id}', 'processing', 'processing', '{run}')"),
            "MS001",
        ),
        (
            format!(
                "SELECT machine_state_transition('{id}', 'processing',
                                                 $q$idle'); DROP TABLE machines; --$q$)"
            ),
            "MS001",
        ),
        (
            format!("SELECT atomic_update_machine_state('{id}', 'idle', NULL, 'idle', NULL, true)"),
            "MS005",
        ),
        // An operation id that already named another transition.
        (
            format!(
                "SELECT machine_state_transition('{id}', 'processing', 'idle', '{run}', NULL,
                                                 '{created_by}')"
            ),
            "MS006",
        ),
    ];
    for (statement, expected) in &cases {
        assert_eq!(sqlstate_of(conn, statement), *expected, "{statement}");
    }
    assert_eq!(crate::support::snapshot(conn), before);

    // The same through bound parameters, as a client sends them.
    let call = "SELECT machine_state_transition($1, 'processing', 'error', $2, $3)";
    let refused = sql_query(call)
        .bind::<SqlUuid, _>(id)
        .bind::<SqlUuid, _>(run)
        .bind::<Text, _>("pump\0tripped")
        .execute(conn)
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("invalid byte sequence for encoding \"UTF8\": 0x00"),
        "{refused}"
    );
    let refused = sql_query(call)
        .bind::<SqlUuid, _>(id)
        .bind::<SqlUuid, _>(run)
        .bind::<Text, _>("x".repeat(10 * 1024 * 1024))
        .execute(conn)
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("description is 10485760 characters long, the limit is 4096"),
        "{refused}"
    );
    assert_eq!(crate::support::snapshot(conn), before);

    // Quotes and dollar quotes are data: stored and read back as sent.
    let nasty = "it's a $$ \"quoted\" $fn$ failure'); DROP TABLE machines; --";
    sql_query("SELECT atomic_error_machine_state($1, $2)")
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(nasty)
        .execute(conn)
        .unwrap();
    let AnyMachine::Errored(errored) = AnyMachine::load(conn, id).unwrap() else {
        panic!("expected an errored machine");
    };
    // (stored behind the shipped prefix)
    assert_eq!(
        errored.description(),
        format!("Recipe execution error: {nasty}")
    );
    assert_consistent(conn, id);
}
