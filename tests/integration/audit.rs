//! The audit finds exactly the diverged pairs; repair brings them back under
//! its documented policy, recorded in the history; stuck machines are found.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use machine_state::audit::{Side, audit, repair, stuck};
use machine_state::history::history;
use machine_state::{AnyMachine, Idle, Machine, Offline, State};
use uuid::Uuid;

use crate::support::{TestDb, assert_consistent, insert_raw_pair, snapshot};

/// Seed a diverged pair with `machines` written `machines_age` seconds ago
/// and `machine_state` `state_age` seconds ago.
fn diverged(
    conn: &mut diesel::PgConnection,
    status: (&str, Option<Uuid>, i32),
    state: (&str, Option<Uuid>, i32),
) -> Uuid {
    let id = Uuid::new_v4();
    let uuid = |p: Option<Uuid>| p.map_or("NULL".to_owned(), |p| format!("'{p}'"));
    conn.batch_execute(&format!(
        "INSERT INTO machines (id, status, current_process_id, updated_at)
         VALUES ('{id}', '{}', {}, now() - interval '{} seconds');
         INSERT INTO machine_state (machine_id, current_state, process_id, state_since, updated_at)
         VALUES ('{id}', '{}', {}, now() - interval '{} seconds', now() - interval '{} seconds');",
        status.0,
        uuid(status.1),
        status.2,
        state.0,
        uuid(state.1),
        state.2,
        state.2
    ))
    .unwrap();
    id
}

#[test]
fn audit_finds_exactly_the_diverged_machines_and_repair_brings_them_to_zero() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    for _ in 0..5 {
        Machine::<Offline>::create(conn, Uuid::new_v4()).unwrap();
    }
    let run = Uuid::new_v4();
    // machines written last: it says idle, machine_state still says processing.
    let machines_newer = diverged(conn, ("idle", None, 10), ("processing", Some(run), 20));
    // machine_state written last: it says processing, machines still idle.
    let state_newer = diverged(conn, ("idle", None, 20), ("processing", Some(run), 10));
    // A legacy status this crate does not know, on both sides.
    let unknown = Uuid::new_v4();
    insert_raw_pair(conn, unknown, "running", "running");

    let report = audit(conn).unwrap();
    assert_eq!(report.machines, 8);
    let mut found: Vec<Uuid> = report.diverged.iter().map(|f| f.pair.machine_id).collect();
    found.sort();
    let mut seeded = vec![machines_newer, state_newer, unknown];
    seeded.sort();
    assert_eq!(found, seeded);
    assert!((report.diverged_percent() - 37.5).abs() < 1e-9);

    let before = snapshot(conn);
    let planned = repair(conn, true).unwrap();
    assert_eq!(planned.len(), 3);
    assert!(planned.iter().all(|r| !r.applied));
    assert_eq!(snapshot(conn), before, "a dry run writes nothing");

    let repairs = repair(conn, false).unwrap();
    assert!(repairs.iter().all(|r| r.applied));
    let by_id = |id: Uuid| repairs.iter().find(|r| r.machine_id == id).unwrap();
    assert_eq!(by_id(machines_newer).winner, Side::Machines);
    assert_eq!(by_id(machines_newer).state, State::Idle);
    assert_eq!(by_id(state_newer).winner, Side::MachineState);
    assert_eq!(by_id(state_newer).state, State::Processing);
    assert_eq!(by_id(state_newer).process_id, Some(run));
    assert_eq!(by_id(unknown).winner, Side::Neither);
    assert_eq!(by_id(unknown).state, State::Offline);

    let after = audit(conn).unwrap();
    assert!(after.is_consistent(), "{:?}", after.diverged);
    assert_eq!(after.diverged_percent(), 0.0);
    for id in seeded {
        assert_consistent(conn, id);
        let entries = history(conn, id).unwrap();
        assert_eq!(entries.last().unwrap().kind, "repair");
        assert_eq!(entries.last().unwrap().verb.as_deref(), Some("repair"));
        AnyMachine::load(conn, id).unwrap();
    }
    assert_eq!(
        AnyMachine::load(conn, state_newer).unwrap().process_id(),
        Some(run),
        "the repaired machine runs the process its newer row named"
    );
}

#[test]
fn repair_continues_the_history_chain() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let idle = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .bring_online(conn)
        .unwrap();
    // A legacy writer's first write lands, its second never does.
    conn.batch_execute(&format!(
        "UPDATE machines SET status = 'offline', updated_at = now() WHERE id = '{}'",
        idle.id()
    ))
    .unwrap();
    assert!(!audit(conn).unwrap().is_consistent());
    repair(conn, false).unwrap();
    assert_consistent(conn, idle.id());
    let entries = history(conn, idle.id()).unwrap();
    let last = entries.last().unwrap();
    assert_eq!(
        last.from_state
            .as_ref()
            .map(machine_state::StoredState::as_str),
        Some("idle")
    );
    assert_eq!(last.to_state, "offline");
}

#[test]
fn stuck_finds_machines_processing_for_longer_than_asked() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let run = Uuid::new_v4();
    let old = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .start(conn, run)
        .unwrap();
    Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .start(conn, Uuid::new_v4())
        .unwrap();
    conn.batch_execute(&format!(
        "UPDATE machines SET updated_at = updated_at - interval '2 hours' WHERE id = '{0}';
         UPDATE machine_state SET state_since = state_since - interval '2 hours',
             updated_at = updated_at - interval '2 hours' WHERE machine_id = '{0}';",
        old.id()
    ))
    .unwrap();
    let found = stuck(conn, Duration::from_secs(3600)).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].machine_id, old.id());
    assert_eq!(found[0].process_id, Some(run));
    assert!(
        stuck(conn, Duration::from_secs(3 * 3600))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_testing_kits_check_of_every_machine_finds_exactly_the_broken_ones() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let good = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap();
    let good_id = good.id();
    good.start(conn, Uuid::new_v4()).unwrap();
    machine_state::testing::assert_all_consistent(conn);

    // A legacy half write breaks I1 (and I6: the history no longer ends in
    // `machines`' state).
    let broken = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap().id();
    conn.batch_execute(&format!(
        "UPDATE machines SET status = 'offline' WHERE id = '{broken}'"
    ))
    .unwrap();
    let found = machine_state::testing::all_violations(conn).unwrap();
    assert!(!found.is_empty());
    assert!(
        found.iter().all(|f| f.contains(&broken.to_string())),
        "{found:#?}"
    );
    assert!(found.iter().any(|f| f.contains("I1")), "{found:#?}");
    assert!(found.iter().any(|f| f.contains("I6")), "{found:#?}");
    assert!(!found.iter().any(|f| f.contains(&good_id.to_string())));
}
