//! Adopting a live legacy database (tests/fixtures/legacy_schema.sql): the
//! migrations apply without touching the legacy's columns or rows, the audit
//! finds exactly the divergence the legacy writers left, repair brings it to
//! 0%, enforcement then refuses the legacy two-write, and rolling everything
//! back restores the catalog exactly as it was.

use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Text};
use machine_state::audit::{Side, Violation, audit, repair};
use machine_state::history::history;
use machine_state::migrations::MIGRATIONS;
use machine_state::{AnyMachine, State, WritePath, revert_all_migrations, run_migrations};
use uuid::Uuid;

use crate::support::{
    TestDb, assert_consistent, create_role, invariants_enforced, schema_dump, snapshot, sqlstate_of,
};

/// The legacy database as the field has it.
pub(crate) const LEGACY_FIXTURE: &str = include_str!("../fixtures/legacy_schema.sql");

/// The machines of the fixture, consistent ones (`c…`) and the seven it seeds
/// diverged (`d…`).
fn machine(prefix: char, n: u8) -> Uuid {
    format!("{prefix}0000000-0000-0000-0000-{n:012}")
        .parse()
        .unwrap()
}

fn run(suffix: &str) -> Uuid {
    format!("a0000000-0000-0000-0000-{suffix:0>12}")
        .parse()
        .unwrap()
}

/// A database holding the legacy schema and data, not migrated.
pub(crate) fn legacy_database() -> TestDb {
    let db = TestDb::empty();
    db.conn().batch_execute(LEGACY_FIXTURE).unwrap();
    db
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

/// Every legacy-only column of every legacy row: what the adoption must
/// never touch.
fn legacy_columns(conn: &mut PgConnection) -> Vec<String> {
    sql_query(
        "SELECT line FROM (
             SELECT concat_ws(' | ', id, serial_number, location, model, machine_type,
                              install_date, admin_id, is_active) AS line
             FROM machines
             UNION ALL
             SELECT concat_ws(' | ', machine_id, last_heartbeat, updated_by)
             FROM machine_state
             WHERE machine_id::text LIKE 'c%' OR machine_id::text LIKE 'd%'
         ) legacy ORDER BY line",
    )
    .load::<Line>(conn)
    .unwrap()
    .into_iter()
    .map(|l| l.line)
    .collect()
}

/// Lines only in `before`, then lines only in `after`: a readable account of
/// how two schema dumps differ.
fn dump_difference(before: &str, after: &str) -> String {
    let only = |a: &str, b: &str| {
        a.lines()
            .filter(|line| !b.lines().any(|other| other == *line))
            .map(|line| format!("  {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "only before:\n{}\nonly after:\n{}",
        only(before, after),
        only(after, before)
    )
}

fn count(conn: &mut PgConnection, query: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    sql_query(query).get_result::<Count>(conn).unwrap().n
}

#[test]
fn adopting_a_legacy_database_repairs_enforces_and_rolls_back_to_the_exact_catalog() {
    let db = legacy_database();
    let conn = &mut db.conn();
    let schema_before = schema_dump(&db);
    let legacy_before = legacy_columns(conn);
    let diverged: Vec<Uuid> = (1..=7).map(|n| machine('d', n)).collect();

    // As shipped, every legacy wrapper fails: the core function does not
    // exist, and `WHEN OTHERS` turns that into a generic P0001.
    let complete_c5 = format!(
        "SELECT atomic_complete_machine_state('{}')",
        machine('c', 5)
    );
    assert_eq!(sqlstate_of(conn, &complete_c5), "P0001");

    // Migrate: nothing of the legacy's is touched; its functions are parked.
    let total = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .unwrap()
        .len();
    assert_eq!(run_migrations(conn).unwrap().len(), total);
    assert_eq!(legacy_columns(conn), legacy_before);
    assert_eq!(
        count(
            conn,
            "SELECT count(*) AS n FROM pg_proc
             WHERE pronamespace = 'machine_state_replaced'::regnamespace"
        ),
        3,
        "the three legacy wrappers are parked, whole"
    );
    // ... where even the role they were granted to cannot reach them (they are
    // SECURITY DEFINER without a pinned search_path, as shipped).
    let app = create_role(conn, "factory_app");
    for role in ["legacy_app", &app] {
        conn.batch_execute(&format!("SET ROLE {role}")).unwrap();
        assert_eq!(
            sqlstate_of(
                conn,
                &format!(
                    "SELECT machine_state_replaced.atomic_complete_machine_state('{}')",
                    machine('c', 5)
                )
            ),
            "42501",
            "{role}"
        );
        conn.batch_execute("RESET ROLE").unwrap();
    }
    assert!(!invariants_enforced(conn), "installed disabled");

    // The audit reports exactly the seeded divergence.
    let report = audit(conn).unwrap();
    assert_eq!(report.machines, 13);
    let found: Vec<Uuid> = report.diverged.iter().map(|f| f.pair.machine_id).collect();
    assert_eq!(found, diverged);
    assert!((report.diverged_percent() - 700.0 / 13.0).abs() < 1e-9);
    let violations = |id: Uuid| {
        report
            .diverged
            .iter()
            .find(|f| f.pair.machine_id == id)
            .unwrap()
            .violations
            .clone()
    };
    assert!(violations(machine('d', 5)).contains(&Violation::UnknownState));
    assert_eq!(violations(machine('d', 6)), [Violation::MissingStateRow]);
    assert_eq!(violations(machine('d', 7)), [Violation::FailureMode]);

    // Enforcement cannot go on over diverged pairs.
    let before = snapshot(conn);
    assert_eq!(
        sqlstate_of(conn, "SELECT machine_state_enforce_invariants()"),
        "MS008"
    );
    assert!(!invariants_enforced(conn));
    assert_eq!(snapshot(conn), before);

    // Repair: the row written last wins, and the history says so.
    let repairs = repair(conn, false).unwrap();
    assert!(repairs.iter().all(|r| r.applied), "{repairs:?}");
    let decided = |id: Uuid| {
        let r = repairs.iter().find(|r| r.machine_id == id).unwrap();
        (r.winner, r.state, r.process_id)
    };
    assert_eq!(
        decided(machine('d', 1)),
        (Side::Machines, State::Processing, Some(run("d1")))
    );
    assert_eq!(
        decided(machine('d', 2)),
        (Side::MachineState, State::Idle, None)
    );
    assert_eq!(
        decided(machine('d', 3)),
        (Side::Machines, State::Errored, None)
    );
    assert_eq!(
        decided(machine('d', 4)),
        (Side::MachineState, State::Processing, Some(run("e4")))
    );
    assert_eq!(
        decided(machine('d', 5)),
        (Side::Neither, State::Offline, None)
    );
    assert_eq!(
        decided(machine('d', 6)),
        (Side::Machines, State::Idle, None)
    );
    assert_eq!(
        decided(machine('d', 7)),
        (Side::Machines, State::Errored, None)
    );
    for &id in &diverged {
        let kinds: Vec<String> = history(conn, id)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["repair"], "{id}");
    }
    let report = audit(conn).unwrap();
    assert!(report.is_consistent(), "{:?}", report.diverged);
    assert_eq!(report.diverged_percent(), 0.0);
    assert_eq!(
        legacy_columns(conn).len(),
        legacy_before.len() + 1,
        "d6 got its machine_state row"
    );
    for id in (1..=6).map(|n| machine('c', n)).chain(diverged) {
        AnyMachine::load(conn, id).unwrap();
    }

    // Enforce, then the legacy two-write is refused at its first write, in
    // autocommit, as our role and as the legacy services' role.
    conn.batch_execute("SELECT machine_state_enforce_invariants()")
        .unwrap();
    assert!(invariants_enforced(conn));
    let idle = machine('c', 3);
    let first_write = format!(
        "UPDATE machines SET status = 'processing', current_process_id = '{}', updated_at = now()
         WHERE id = '{idle}'",
        Uuid::new_v4()
    );
    let before = snapshot(conn);
    let refused = conn.batch_execute(&first_write).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains(&format!("machine `{idle}` would be left inconsistent")),
        "{refused}"
    );
    assert_eq!(snapshot(conn), before, "nothing half-applied");
    assert_eq!(sqlstate_of(conn, &first_write), "MS007");
    conn.batch_execute("SET ROLE legacy_app").unwrap();
    assert_eq!(sqlstate_of(conn, &first_write), "MS007");
    conn.batch_execute("RESET ROLE").unwrap();
    assert_eq!(snapshot(conn), before);

    // The legacy RPC names now work, as does the crate, both write paths.
    conn.batch_execute(&format!(
        "SELECT atomic_processing_machine_state('{idle}', '{}');
         SELECT atomic_complete_machine_state('{idle}');",
        Uuid::new_v4()
    ))
    .unwrap();
    assert_consistent(conn, idle);
    let c4 = machine('c', 4);
    for path in [WritePath::Statement, WritePath::SqlFunction] {
        let AnyMachine::Idle(idle) = AnyMachine::load(conn, c4).unwrap() else {
            panic!("c4 is idle");
        };
        idle.with_write_path(path)
            .start(conn, Uuid::new_v4())
            .unwrap()
            .complete(conn)
            .unwrap();
        assert_consistent(conn, c4);
    }

    // Roles set up for the application: revert must take the grants back.
    conn.batch_execute(&format!(
        "SELECT machine_state_grant_application('{app}');
         SELECT machine_state_grant_application('legacy_app');"
    ))
    .unwrap();

    // Roll everything back: the catalog is exactly what it was (the legacy
    // wrappers' definitions, owners, grants and comments included), and the
    // legacy data is still there.
    assert_eq!(revert_all_migrations(conn).unwrap().len(), total);
    let schema_after = schema_dump(&db);
    assert!(
        schema_after == schema_before,
        "{}",
        dump_difference(&schema_before, &schema_after)
    );
    assert_eq!(legacy_columns(conn).len(), legacy_before.len() + 1);
    assert_eq!(sqlstate_of(conn, &complete_c5), "P0001", "as shipped again");

    // And the adoption can be run again.
    assert_eq!(run_migrations(conn).unwrap().len(), total);
    assert!(audit(conn).unwrap().is_consistent());
}
