//! An application's own diesel migrations beside the crate's, in the same
//! `__diesel_schema_migrations` (`tests/fixtures/app_migrations`: one version
//! before some of the crate's, one after all of them): both orders, revert
//! included, each side with its own calls.

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::Text;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use machine_state::migrations::{MIGRATIONS, revert_last_migration_from, run_migrations_from};
use machine_state::{
    MigrationOptions, revert_all_migrations, revert_last_migration, run_migrations,
};

use crate::support::TestDb;

/// The application's migrations.
const APP: EmbeddedMigrations = embed_migrations!("tests/fixtures/app_migrations");

/// The application's two migrations.
const APP_EARLY: &str = "20261130000000";
const APP_LATE: &str = "20300101000000";

/// The crate's newest migration.
fn our_newest() -> String {
    MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .unwrap()
        .iter()
        .map(|m| m.name().version().to_string())
        .max()
        .unwrap()
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Which of the application's tables exist.
fn app_tables(conn: &mut PgConnection) -> Vec<String> {
    sql_query(
        "SELECT relname::text AS name FROM pg_class
         WHERE relname IN ('app_settings', 'process_executions') AND relkind = 'r'
         ORDER BY 1",
    )
    .load::<Name>(conn)
    .unwrap()
    .into_iter()
    .map(|n| n.name)
    .collect()
}

#[test]
fn the_crate_first_then_the_application_each_reverts_its_own() {
    let db = TestDb::empty();
    let conn = &mut db.conn();
    run_migrations(conn).unwrap();
    let applied = conn.run_pending_migrations(APP).unwrap();
    assert_eq!(applied.len(), 2);

    // The crate's revert skips the application's versions, whichever is newer.
    assert_eq!(revert_last_migration(conn).unwrap(), our_newest());
    assert_eq!(run_migrations(conn).unwrap(), vec![our_newest()]);
    assert!(!conn.has_pending_migration(APP).unwrap());

    // diesel's own revert for the application reverts its newest version,
    // which sorts after every one of ours.
    assert_eq!(
        conn.revert_last_migration(APP).unwrap().to_string(),
        APP_LATE
    );
    // Its older one sorts before ours: diesel's revert_last_migration would
    // take ours for the last; the crate's `_from` takes the set's own.
    let options = MigrationOptions::default();
    assert_eq!(
        revert_last_migration_from(conn, &APP, &options).unwrap(),
        APP_EARLY
    );
    assert!(app_tables(conn).is_empty());
    assert!(run_migrations(conn).unwrap().is_empty(), "ours untouched");
}

#[test]
fn the_application_first_then_the_crate_each_reverts_its_own() {
    let db = TestDb::empty();
    let conn = &mut db.conn();
    assert_eq!(conn.run_pending_migrations(APP).unwrap().len(), 2);
    let ours = run_migrations(conn).unwrap();
    assert!(ours.iter().all(|v| v != APP_EARLY && v != APP_LATE));

    // Reverting all of the crate's leaves the application's tables and
    // versions alone.
    assert_eq!(revert_all_migrations(conn).unwrap().len(), ours.len());
    assert_eq!(app_tables(conn), ["app_settings", "process_executions"]);
    assert!(!conn.has_pending_migration(APP).unwrap());

    // And back: the crate applies exactly its own.
    assert_eq!(run_migrations(conn).unwrap(), ours);
    assert_eq!(
        conn.revert_last_migration(APP).unwrap().to_string(),
        APP_LATE
    );
    assert_eq!(
        run_migrations_from(conn, &APP, &MigrationOptions::default()).unwrap(),
        vec![APP_LATE.to_owned()]
    );
    assert_eq!(revert_last_migration(conn).unwrap(), our_newest());
}
