//! The rules Rust and SQL must both hold, pinned together (see
//! ARCHITECTURE.md, "Mirrors"): the transition table against the typed
//! methods and against `machine_state_transition`, and `Pair::violations`
//! against `machine_state_pair_violations`.

use std::collections::BTreeSet;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::Text;
use machine_state::audit::Violation;
use machine_state::{
    Action, AnyMachine, Error, Errored, Idle, Machine, MachineState, Offline, Processing, State,
    TRANSITIONS, Transition, Verb,
};
use proptest::prelude::*;
use strum::IntoEnumIterator;
use uuid::Uuid;

use crate::support::{TestDb, snapshot, sqlstate_of};

/// One typed method, named by its verb: its source and target are read off
/// its type, so this compiles only while `Machine<F>` has the method.
fn typed<F: MachineState, T: MachineState>(
    verb: Verb,
    _method: impl FnOnce(Machine<F>, &mut PgConnection) -> Transition<F, T>,
) -> (State, Verb, State) {
    (F::STATE, verb, T::STATE)
}

/// Every transition method of the typed machines: the compile-time mirror of
/// the table.
#[expect(
    clippy::result_large_err,
    reason = "the closures return what the typed methods return"
)]
fn typed_methods() -> BTreeSet<(State, Verb, State)> {
    let run = Uuid::nil();
    BTreeSet::from([
        typed(Verb::BringOnline, |m: Machine<Offline>, c| {
            m.bring_online(c)
        }),
        typed(Verb::Start, |m: Machine<Offline>, c| m.start(c, run)),
        typed(Verb::TakeOffline, |m: Machine<Idle>, c| m.take_offline(c)),
        typed(Verb::Start, |m: Machine<Idle>, c| m.start(c, run)),
        typed(Verb::Complete, |m: Machine<Processing>, c| m.complete(c)),
        typed(Verb::Stop, |m: Machine<Processing>, c| m.stop(c)),
        typed(Verb::Fail, |m: Machine<Processing>, c| m.fail(c, "x")),
        typed(Verb::Reset, |m: Machine<Errored>, c| m.reset(c)),
        typed(Verb::TakeOffline, |m: Machine<Errored>, c| {
            m.take_offline(c)
        }),
    ])
}

#[test]
fn typestate_is_the_transition_table() {
    let table: BTreeSet<(State, Verb, State)> =
        TRANSITIONS.iter().map(|t| (t.from, t.verb, t.to)).collect();
    assert_eq!(typed_methods(), table);
}

/// A machine brought to `state` through legal transitions.
fn machine_in(conn: &mut PgConnection, state: State) -> AnyMachine {
    let offline = Machine::<Offline>::create(conn, Uuid::new_v4()).unwrap();
    let machine = match state {
        State::Offline => AnyMachine::Offline(offline),
        State::Idle => AnyMachine::Idle(offline.bring_online(conn).unwrap()),
        State::Processing => AnyMachine::Processing(offline.start(conn, Uuid::new_v4()).unwrap()),
        State::Errored => AnyMachine::Errored(
            offline
                .start(conn, Uuid::new_v4())
                .unwrap()
                .fail(conn, "seeded")
                .unwrap(),
        ),
    };
    assert_eq!(machine.state(), state);
    machine
}

fn action(verb: Verb) -> Action {
    match verb {
        Verb::BringOnline => Action::BringOnline,
        Verb::TakeOffline => Action::TakeOffline,
        Verb::Start => Action::Start(Uuid::new_v4()),
        Verb::Complete => Action::Complete,
        Verb::Stop => Action::Stop,
        Verb::Fail => Action::Fail("failed on purpose".to_owned()),
        Verb::Reset => Action::Reset,
    }
}

#[test]
fn perform_applies_exactly_the_table_and_refuses_the_rest_without_writing() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    for from in State::iter() {
        for verb in Verb::iter() {
            let machine = machine_in(conn, from);
            let entry = TRANSITIONS
                .iter()
                .find(|t| t.from == from && t.verb == verb);
            let before = snapshot(conn);
            match (machine.perform(conn, &action(verb)), entry) {
                (Ok(moved), Some(entry)) => assert_eq!(moved.state(), entry.to, "{from} {verb}"),
                (Err(refused), None) => {
                    assert!(
                        matches!(refused.error, Error::IllegalTransition { .. }),
                        "{from} {verb}: {:?}",
                        refused.error
                    );
                    assert_eq!(refused.machine.state(), from);
                    assert_eq!(snapshot(conn), before, "{from} {verb} wrote something");
                }
                (outcome, entry) => panic!("{from} {verb}: {outcome:?}, table: {entry:?}"),
            }
        }
    }
}

#[test]
fn the_sql_function_applies_exactly_the_table_and_refuses_the_rest_with_ms001() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    for from in State::iter() {
        for to in State::iter() {
            let machine = machine_in(conn, from);
            let id = machine.id();
            // The run to start, or the run expected to end.
            let process = match (machine.process_id(), to) {
                (Some(running), _) => format!("'{running}'"),
                (None, State::Processing) => format!("'{}'", Uuid::new_v4()),
                (None, _) => "NULL".to_owned(),
            };
            let before = snapshot(conn);
            let sqlstate = sqlstate_of(
                conn,
                &format!(
                    "SELECT machine_state_transition('{id}', '{from}', '{to}', {process},
                                                     'failed on purpose')"
                ),
            );
            if from.can_become(to) {
                assert_eq!(sqlstate, "00000", "{from} -> {to}");
                assert_eq!(AnyMachine::load(conn, id).unwrap().state(), to);
            } else {
                assert_eq!(sqlstate, "MS001", "{from} -> {to}");
                assert_eq!(snapshot(conn), before, "{from} -> {to} wrote something");
            }
        }
    }
}

/// The verb the history holds for the latest entry of `id`.
fn latest_verb(conn: &mut PgConnection, id: Uuid) -> Option<String> {
    machine_state::history::history(conn, id)
        .unwrap()
        .pop()
        .and_then(|entry| entry.verb)
}

#[test]
fn the_sql_function_knows_exactly_the_verbs_of_the_table_and_records_them() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let table: BTreeSet<(State, Verb, State)> =
        TRANSITIONS.iter().map(|t| (t.from, t.verb, t.to)).collect();
    for from in State::iter() {
        // Illegal triples write nothing, so one machine serves them all.
        let shared = machine_in(conn, from);
        for verb in Verb::iter() {
            for to in State::iter() {
                let legal = table.contains(&(from, verb, to));
                let machine = if legal {
                    machine_in(conn, from)
                } else {
                    AnyMachine::load(conn, shared.id()).unwrap()
                };
                let id = machine.id();
                let process = match (machine.process_id(), to) {
                    (Some(running), _) => format!("'{running}'"),
                    (None, State::Processing) => format!("'{}'", Uuid::new_v4()),
                    (None, _) => "NULL".to_owned(),
                };
                let before = snapshot(conn);
                let sqlstate = sqlstate_of(
                    conn,
                    &format!(
                        "SELECT machine_state_transition('{id}', '{from}', '{to}', {process},
                                                         'failed on purpose', NULL, '{verb}')"
                    ),
                );
                if legal {
                    assert_eq!(sqlstate, "00000", "{from} {verb} {to}");
                    assert_eq!(latest_verb(conn, id).as_deref(), Some(verb.as_str()));
                } else {
                    assert_eq!(sqlstate, "MS001", "{from} {verb} {to}");
                    assert_eq!(snapshot(conn), before, "{from} {verb} {to} wrote something");
                }
            }
        }
    }
    // Without a verb, the one the table gives; `processing -> idle` is then
    // a `complete` (a stop names itself).
    let machine = machine_in(conn, State::Processing);
    let (id, run) = (machine.id(), machine.process_id().unwrap());
    conn.batch_execute(&format!(
        "SELECT machine_state_transition('{id}', 'processing', 'idle', '{run}')"
    ))
    .unwrap();
    assert_eq!(latest_verb(conn, id).as_deref(), Some("complete"));
}

/// The invariant each `machine_state_pair_violations` message reports.
fn violation_of_sql(message: &str) -> Violation {
    match message.split(':').next() {
        _ if message.starts_with("no `machine_state` row") => Violation::MissingStateRow,
        _ if message.starts_with("unknown state") => Violation::UnknownState,
        Some("I1") => Violation::StateMismatch,
        Some("I2") => Violation::ProcessMismatch,
        Some("I3") => Violation::ProcessOutsideProcessing,
        Some("I4") => Violation::FailureMode,
        _ => panic!("unexpected message from machine_state_pair_violations: {message}"),
    }
}

#[derive(Debug, Clone)]
struct RawPair {
    status: &'static str,
    process: Option<u8>,
    state_row: Option<(&'static str, Option<u8>, bool, Option<&'static str>)>,
}

fn raw_pair() -> impl Strategy<Value = RawPair> {
    let state = prop::sample::select(vec!["offline", "idle", "processing", "error", "running"]);
    let process = prop::option::of(0u8..2);
    let description = prop::option::of(prop::sample::select(vec![
        "",
        " ",
        "\u{3000}\u{a0}",
        "pump tripped",
    ]));
    (
        state.clone(),
        process.clone(),
        prop::option::weighted(0.9, (state, process, any::<bool>(), description)),
    )
        .prop_map(|(status, process, state_row)| RawPair {
            status,
            process,
            state_row,
        })
}

fn sql_uuid(process: Option<u8>, runs: &[Uuid; 2]) -> String {
    process.map_or("NULL".to_owned(), |p| format!("'{}'", runs[p as usize]))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn pair_violations_in_rust_and_sql_agree(pairs in prop::collection::vec(raw_pair(), 1..16)) {
        let db = TestDb::new();
        let conn = &mut db.conn();
        let mut sql = String::new();
        for pair in &pairs {
            let id = Uuid::new_v4();
            // Runs of this machine (a run is on one machine at a time).
            let runs = [Uuid::new_v4(), Uuid::new_v4()];
            sql += &format!(
                "INSERT INTO machines (id, status, current_process_id) VALUES ('{id}', '{}', {});",
                pair.status,
                sql_uuid(pair.process, &runs)
            );
            if let Some((state, process, failure, description)) = pair.state_row {
                let description = description.map_or("NULL".to_owned(), |d| format!("'{d}'"));
                sql += &format!(
                    "INSERT INTO machine_state
                         (machine_id, current_state, process_id, is_failure_mode, failure_description)
                     VALUES ('{id}', '{state}', {}, {failure}, {description});",
                    sql_uuid(process, &runs)
                );
            }
        }
        conn.batch_execute(&sql).unwrap();

        #[derive(QueryableByName)]
        struct Found {
            #[diesel(sql_type = diesel::sql_types::Uuid)]
            id: Uuid,
            #[diesel(sql_type = Text)]
            message: String,
        }
        let from_sql: Vec<Found> = sql_query(
            "SELECT m.id, v.message
             FROM machines m LEFT JOIN machine_state s ON s.machine_id = m.id
             CROSS JOIN LATERAL unnest(machine_state_pair_violations(m, s)) AS v(message)",
        )
        .load(conn)
        .unwrap();
        let sql_set: BTreeSet<(Uuid, String)> = from_sql
            .iter()
            .map(|f| (f.id, format!("{:?}", violation_of_sql(&f.message))))
            .collect();
        let rust_set: BTreeSet<(Uuid, String)> = machine_state::audit::pairs(conn)
            .unwrap()
            .iter()
            .flat_map(|pair| {
                pair.violations()
                    .into_iter()
                    .filter(|v| v.breaks_state())
                    .map(|v| (pair.machine_id, format!("{v:?}")))
                    .collect::<Vec<_>>()
            })
            .collect();
        prop_assert_eq!(rust_set, sql_set);
    }
}
