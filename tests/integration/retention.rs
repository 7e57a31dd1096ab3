//! Retention of the history (`prune_history`): old entries go, each
//! machine's latest stays (I6 holds), and at most once still holds for every
//! operation younger than the window.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use machine_state::history::{MIN_RETENTION, history, prune_history};
use machine_state::{AnyMachine, Error, Idle, Machine, find_operation};
use uuid::Uuid;

use crate::support::{TestDb, assert_consistent, snapshot};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Move every history entry of `machine` back by `days` (the rows' times
/// with them, so I5 holds).
pub(crate) fn age(conn: &mut diesel::PgConnection, machine: Uuid, days: u32) {
    conn.batch_execute(&format!(
        "UPDATE machine_state_transitions
             SET transitioned_at = transitioned_at - interval '{days} days'
             WHERE machine_id = '{machine}';
         UPDATE machines SET updated_at = updated_at - interval '{days} days'
             WHERE id = '{machine}';
         UPDATE machine_state SET state_since = state_since - interval '{days} days',
                                  updated_at = updated_at - interval '{days} days'
             WHERE machine_id = '{machine}';"
    ))
    .unwrap();
}

#[test]
fn pruning_deletes_old_entries_but_each_machines_latest_and_keeps_every_chain_whole() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let old = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap();
    let old_id = old.id();
    let mut machine = old;
    for _ in 0..5 {
        machine = machine
            .start(conn, Uuid::new_v4())
            .unwrap()
            .complete(conn)
            .unwrap();
    }
    assert_eq!(history(conn, old_id).unwrap().len(), 11);
    age(conn, old_id, 100);

    // A machine whose whole history is young, and one that is old but moved
    // since: its new entries stay.
    let young = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap();
    let young_id = young.id();
    young.take_offline(conn).unwrap();
    let recent_operation = Uuid::new_v4();
    let AnyMachine::Idle(machine) = AnyMachine::load(conn, old_id).unwrap() else {
        panic!("expected an idle machine");
    };
    machine
        .with_operation_id(recent_operation)
        .start(conn, Uuid::new_v4())
        .unwrap();

    // In batches of 3: several statements.
    let deleted = prune_history(conn, 90 * DAY, 3).unwrap();
    assert_eq!(
        deleted, 11,
        "all 11 old entries: the machine's latest is young"
    );
    let kept = history(conn, old_id).unwrap();
    assert_eq!(kept.len(), 1, "{kept:#?}");
    assert_eq!(kept[0].operation_id, recent_operation);
    assert_eq!(history(conn, young_id).unwrap().len(), 2);
    assert_consistent(conn, old_id);
    assert_consistent(conn, young_id);

    // Nothing more to prune.
    assert_eq!(prune_history(conn, 90 * DAY, 3).unwrap(), 0);
}

#[test]
fn a_machine_whose_history_is_all_old_keeps_its_latest_entry() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let machine = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap();
    let id = machine.id();
    machine.take_offline(conn).unwrap();
    age(conn, id, 400);
    assert_eq!(prune_history(conn, 30 * DAY, 1000).unwrap(), 1);
    let kept = history(conn, id).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].to_state, "offline");
    assert_consistent(conn, id);
}

#[test]
fn at_most_once_holds_for_operations_inside_the_window() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let machine = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap();
    let id = machine.id();
    let operation = Uuid::new_v4();
    let run = Uuid::new_v4();
    let stale = crate::support::load_as::<Idle>(conn, id);
    let running = machine
        .with_operation_id(operation)
        .start(conn, run)
        .unwrap();
    running.complete(conn).unwrap();
    age(conn, id, 10);
    prune_history(conn, 30 * DAY, 1000).unwrap();

    // The start is 10 days old, inside the 30-day window: a retry of it
    // (the stale typed machine, the same operation id) reports the original
    // outcome and writes nothing.
    assert!(find_operation(conn, operation).unwrap().is_some());
    let before = snapshot(conn);
    let again = stale.with_operation_id(operation).start(conn, run).unwrap();
    assert_eq!(again.process_id(), run);
    assert_eq!(snapshot(conn), before);
}

#[test]
fn a_window_shorter_than_a_day_or_an_empty_batch_is_refused_and_deletes_nothing() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap().id();
    age(conn, id, 5);
    let before = snapshot(conn);
    for (window, batch) in [(MIN_RETENTION - Duration::from_secs(1), 10), (DAY, 0)] {
        match prune_history(conn, window, batch) {
            Err(Error::InvalidInput(reason)) => assert!(!reason.is_empty()),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(snapshot(conn), before);
}

#[test]
fn prune_history_as_a_command() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let machine = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap();
    let id = machine.id();
    machine.take_offline(conn).unwrap();
    age(conn, id, 100);
    let out = assert_cmd::Command::cargo_bin("machine-state")
        .unwrap()
        .args([
            "--database-url",
            &db.url,
            "prune-history",
            "--older-than",
            "90days",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("deleted 1 history entries"), "{out:?}");
    // the migration prepared tomorrow's partition on: today's is created
    let today = format!(
        "machine_state_transitions_p{}",
        chrono::Utc::now().format("%Y%m%d")
    );
    assert!(
        stdout.contains(&format!(
            "prepared 1 daily partitions up to 7 days ahead: {today}"
        )),
        "{out:?}"
    );
    let refused = assert_cmd::Command::cargo_bin("machine-state")
        .unwrap()
        .args([
            "--database-url",
            &db.url,
            "prune-history",
            "--older-than",
            "1h",
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
}

/// An operation id of `days` days ago (a UUIDv7 of that time), distinct by
/// `n`.
pub(crate) fn operation_days_ago(days: u64, n: u16) -> Uuid {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        - Duration::from_secs(days * 24 * 60 * 60);
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, at.as_secs(), u32::from(n) * 1_000_000);
    Uuid::new_v7(ts)
}

/// The number of daily partitions of the history.
pub(crate) fn daily_partitions(conn: &mut diesel::PgConnection) -> i64 {
    use diesel::prelude::*;
    diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'machine_state_transitions'::regclass \
         AND inhrelid <> 'machine_state_transitions_default'::regclass",
    )
    .get_result(conn)
    .unwrap()
}

#[test]
fn pruning_drops_whole_daily_partitions_but_keeps_each_machines_latest_entry() {
    use diesel::prelude::*;
    let db = TestDb::new();
    let conn = &mut db.conn();
    let moved = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap().id();
    let still = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap().id();
    // Their registrations are 100 days old; the partitions of 40 to 38 days
    // ago get one recipe of each machine, with operation ids of that time.
    age(conn, moved, 100);
    age(conn, still, 100);
    let before = daily_partitions(conn);
    conn.batch_execute("SELECT machine_state_prepare_history(2, now() - interval '40 days')")
        .unwrap();
    assert_eq!(daily_partitions(conn), before + 3);
    for (n, machine) in [(0u16, moved), (2, still)] {
        let process = Uuid::new_v4();
        for (k, (from, to)) in [("idle", "processing"), ("processing", "idle")]
            .into_iter()
            .enumerate()
        {
            diesel::sql_query("SELECT 1 FROM machine_state_transition($1, $2, $3, $4, NULL, $5)")
                .bind::<diesel::sql_types::Uuid, _>(machine)
                .bind::<diesel::sql_types::Text, _>(from)
                .bind::<diesel::sql_types::Text, _>(to)
                .bind::<diesel::sql_types::Uuid, _>(process)
                .bind::<diesel::sql_types::Uuid, _>(operation_days_ago(40, n + k as u16))
                .execute(conn)
                .unwrap();
        }
    }
    let kept = history(conn, still).unwrap().pop().unwrap();
    // One machine moves today: its entries of 40 days ago all go.
    let AnyMachine::Idle(machine) = AnyMachine::load(conn, moved).unwrap() else {
        panic!("expected an idle machine");
    };
    machine.take_offline(conn).unwrap();

    // 2 registrations (default partition, row by row) + 2 entries of
    // `moved` + 1 of `still` (whole partition); `still`'s latest stays.
    assert_eq!(prune_history(conn, 30 * DAY, 1000).unwrap(), 5);
    assert_eq!(
        daily_partitions(conn),
        before,
        "the partitions of 40 to 38 days ago are dropped"
    );
    assert_eq!(history(conn, still).unwrap(), vec![kept.clone()]);
    assert_eq!(find_operation(conn, kept.operation_id).unwrap(), Some(kept));
    let moved_history = history(conn, moved).unwrap();
    assert_eq!(moved_history.len(), 1);
    assert_eq!(moved_history[0].to_state, "offline");
    assert_consistent(conn, moved);
    assert_consistent(conn, still);
}

#[test]
fn pruning_and_preparing_inside_the_callers_transaction_are_refused_and_change_nothing() {
    use machine_state::history::prepare_history;
    let db = TestDb::new();
    let conn = &mut db.conn();
    let machine = Machine::<Idle>::create(conn, Uuid::new_v4()).unwrap().id();
    age(conn, machine, 100);
    let partitions = daily_partitions(conn);
    diesel::Connection::transaction::<(), Error, _>(conn, |conn| {
        for error in [
            prepare_history(conn, 0).unwrap_err(),
            prune_history(conn, 30 * DAY, 1000).unwrap_err(),
        ] {
            assert!(
                matches!(&error, Error::InvalidInput(m) if m.contains("outside a transaction")),
                "{error:?}"
            );
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(daily_partitions(conn), partitions);
    assert_eq!(history(conn, machine).unwrap().len(), 1);
    // The SQL function refuses a REPEATABLE READ transaction (the crate's
    // connections default to it): its locks would come after its snapshot.
    let refused = conn
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ;
             SELECT machine_state_prune_history('30 days');",
        )
        .unwrap_err();
    conn.batch_execute("ROLLBACK").unwrap();
    assert!(
        refused
            .to_string()
            .contains("cannot prune the history in a repeatable read transaction"),
        "{refused}"
    );
}
