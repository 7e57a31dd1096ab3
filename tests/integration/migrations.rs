//! The embedded migrations apply, revert and re-apply; on a database that
//! already has legacy tables they touch nothing of the legacy's.

use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::Text;
use machine_state::migrations::MIGRATIONS;
use machine_state::{revert_all_migrations, revert_last_migration, run_migrations};

use crate::support::TestDb;

#[derive(QueryableByName, PartialEq, Eq, Debug)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

fn relations(conn: &mut PgConnection) -> Vec<String> {
    sql_query(
        "SELECT c.relname::text AS name FROM pg_class c
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
           AND c.relname <> '__diesel_schema_migrations' -- diesel's own bookkeeping
         UNION ALL
         SELECT p.oid::regprocedure::text FROM pg_proc p
         WHERE p.pronamespace = 'public'::regnamespace
         UNION ALL
         SELECT attrelid::regclass::text || '.' || attname FROM pg_attribute
         WHERE attrelid IN ('public.machines'::regclass, 'public.machine_state'::regclass)
           AND attnum > 0 AND NOT attisdropped
         ORDER BY 1",
    )
    .load::<Name>(conn)
    .unwrap()
    .into_iter()
    .map(|n| n.name)
    .collect()
}

#[test]
fn migrations_apply_revert_and_apply_again() {
    let db = TestDb::empty();
    let conn = &mut db.conn();
    let total = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .unwrap()
        .len();
    let applied = run_migrations(conn).unwrap();
    assert_eq!(applied.len(), total);
    assert!(
        run_migrations(conn).unwrap().is_empty(),
        "nothing pending twice"
    );
    revert_last_migration(conn).unwrap();
    assert_eq!(run_migrations(conn).unwrap().len(), 1);
    assert_eq!(revert_all_migrations(conn).unwrap().len(), total);
    let left: Vec<String> = sql_query(
        "SELECT relname::text AS name FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND relname LIKE 'machine%'",
    )
    .load::<Name>(conn)
    .unwrap()
    .into_iter()
    .map(|n| n.name)
    .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(run_migrations(conn).unwrap().len(), total);
}

#[test]
fn migrations_adopt_existing_legacy_tables_and_leave_them_on_revert() {
    let db = TestDb::empty();
    let conn = &mut db.conn();
    conn.batch_execute(
        "CREATE TABLE machines (
             id uuid PRIMARY KEY,
             serial_number text NOT NULL,
             status text NOT NULL,
             current_process_id uuid,
             updated_at timestamptz NOT NULL DEFAULT now()
         );
         CREATE TABLE machine_state (
             machine_id uuid PRIMARY KEY REFERENCES machines (id),
             current_state text NOT NULL,
             process_id uuid,
             state_since timestamptz NOT NULL DEFAULT now()
         );
         INSERT INTO machines (id, serial_number, status)
         VALUES ('00000000-0000-0000-0000-000000000001', 'SN-1', 'idle');
         INSERT INTO machine_state (machine_id, current_state)
         VALUES ('00000000-0000-0000-0000-000000000001', 'idle');",
    )
    .unwrap();
    let before = relations(conn);

    run_migrations(conn).unwrap();
    let machine = machine_state::AnyMachine::load(
        conn,
        "00000000-0000-0000-0000-000000000001".parse().unwrap(),
    );
    assert!(machine.is_ok(), "{machine:?}");
    revert_all_migrations(conn).unwrap();

    assert_eq!(relations(conn), before);
    let serials: Vec<Name> = sql_query("SELECT serial_number AS name FROM machines")
        .load(conn)
        .unwrap();
    assert_eq!(
        serials,
        vec![Name {
            name: "SN-1".into()
        }]
    );
}

#[test]
fn a_legacy_double_start_stops_the_migration_with_the_machines_to_fix() {
    let db = TestDb::empty();
    let conn = &mut db.conn();
    conn.batch_execute(
        "CREATE TABLE machines (id uuid PRIMARY KEY, status text NOT NULL,
                                current_process_id uuid, updated_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO machines (id, status, current_process_id) VALUES
             ('00000000-0000-0000-0000-00000000000a', 'processing', '00000000-0000-0000-0000-0000000000ff'),
             ('00000000-0000-0000-0000-00000000000b', 'processing', '00000000-0000-0000-0000-0000000000ff');",
    )
    .unwrap();
    let error = run_migrations(conn).unwrap_err().to_string();
    assert!(
        error.contains("0000000000ff") && error.contains("00000000000a"),
        "{error}"
    );
    conn.batch_execute(
        "UPDATE machines SET status = 'idle', current_process_id = NULL
         WHERE id = '00000000-0000-0000-0000-00000000000b'",
    )
    .unwrap();
    run_migrations(conn).unwrap();
}
