//! The schema in one place: `sql/schema.sql` is what `pg_dump --schema-only`
//! prints for a freshly migrated database, `sql/functions/<name>.sql` each
//! SQL function's definition as the migrations leave it, and `src/schema.rs`
//! carries the tables' `COMMENT ON` as docs. All three are checked in and
//! pinned here to what the migrations create; a change to the migrations
//! fails these tests until the files are regenerated with
//!
//! ```text
//! MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::
//! ```
//!
//! (the habit of rust-analyzer's generated files and trybuild's
//! `TRYBUILD=overwrite`). `src/schema.rs` itself is written by `diesel
//! print-schema` (diesel.toml, `with_docs`; `sql/print_schema.sql` says how);
//! its docs are checked here.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Nullable, Text};

use crate::support::{TestDb, server};

/// The one command that regenerates the checked-in files.
const BLESS: &str = "MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::";

/// Whether this run writes the files instead of comparing them.
fn blessing() -> bool {
    std::env::var_os("MACHINE_STATE_BLESS").is_some_and(|value| value == "1")
}

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The major version of the test server's `pg_dump` (`pg_dump (PostgreSQL) 15.18`).
fn pg_dump_major() -> String {
    let output = std::process::Command::new(server().bin_dir().join("pg_dump"))
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8(output.stdout).unwrap();
    version
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.split('.').next())
        .unwrap_or_else(|| panic!("cannot read the version of `pg_dump`: {version}"))
        .to_owned()
}

/// `pg_dump --schema-only` of a freshly migrated database, without what
/// varies between runs and servers: the version header, the `SET` lines,
/// the `\restrict` key, diesel's bookkeeping table, and the history's daily
/// partitions (`machine_state_transitions_pYYYYMMDD`, named and bounded by
/// the day the database was migrated); runs of blank lines folded into one.
fn normalized_schema(major: &str) -> String {
    let db = TestDb::new();
    let output = std::process::Command::new(server().bin_dir().join("pg_dump"))
        .args([
            "--schema-only",
            "--exclude-table=__diesel_schema_migrations",
            "--exclude-table=machine_state_transitions_p[0-9]*",
            "--dbname",
            &db.url,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dump = String::from_utf8(output.stdout).unwrap();
    let mut lines = vec![
        "-- The schema the migrations create, as `pg_dump --schema-only` prints it".to_owned(),
        format!("-- (PostgreSQL {major}) for a freshly migrated database. Generated: do not edit;"),
        "-- change the schema with a new migration, then regenerate this file with".to_owned(),
        format!("--   {BLESS}"),
        "-- Left out: diesel's `__diesel_schema_migrations` and the history's daily".to_owned(),
        "-- partitions (`machine_state_transitions_pYYYYMMDD`, dated by the migration).".to_owned(),
        "-- Each function's definition is also in sql/functions/<name>.sql.".to_owned(),
        String::new(),
    ];
    for line in dump.lines() {
        let varies = line.starts_with("-- Dumped from database version")
            || line.starts_with("-- Dumped by pg_dump version")
            || line.starts_with("\\restrict ")
            || line.starts_with("\\unrestrict ")
            || line.starts_with("SET ")
            || line.starts_with("SELECT pg_catalog.set_config('search_path'");
        let blank_again = line.is_empty() && lines.last().is_some_and(String::is_empty);
        if !varies && !blank_again {
            lines.push(line.to_owned());
        }
    }
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines.join("\n") + "\n"
}

#[derive(QueryableByName)]
struct Function {
    #[diesel(sql_type = Text)]
    file: String,
    #[diesel(sql_type = Text)]
    definition: String,
    #[diesel(sql_type = Text)]
    signature: String,
    #[diesel(sql_type = Nullable<Text>)]
    comment: Option<String>,
}

/// Every function the migrations create (in any schema but the system's,
/// extensions' members aside), by file: `<name>.sql` for `public`,
/// `<schema>.<name>.sql` elsewhere; overloads share their name's file.
fn function_files(major: &str) -> BTreeMap<String, String> {
    let db = TestDb::new();
    let functions = sql_query(include_str!("schema_functions.sql"))
        .load::<Function>(&mut db.conn())
        .unwrap();
    assert!(!functions.is_empty(), "no function found");
    let mut files = BTreeMap::<String, String>::new();
    for function in functions {
        let text = files.entry(function.file.clone()).or_insert_with(|| {
            format!(
                "-- The current definition of {}, as the migrations leave it\n\
                 -- (`pg_get_functiondef`, PostgreSQL {major}). Generated: do not edit; change it\n\
                 -- with a new migration, then regenerate this file with\n\
                 --   {BLESS}\n",
                function.file.trim_end_matches(".sql"),
            )
        });
        text.push('\n');
        text.push_str(function.definition.trim_end());
        text.push_str(";\n");
        if let Some(comment) = function.comment {
            text.push_str(&format!(
                "\nCOMMENT ON FUNCTION {} IS {};\n",
                function.signature,
                quote_literal(&comment)
            ));
        }
    }
    files
}

/// `value` as an SQL string literal.
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Where `expected` and `actual` first differ, with a few lines of each
/// around it, under their names.
fn first_difference(names: [&str; 2], expected: &str, actual: &str) -> String {
    let expected: Vec<&str> = expected.lines().collect();
    let actual: Vec<&str> = actual.lines().collect();
    let at = expected
        .iter()
        .zip(&actual)
        .position(|(e, a)| e != a)
        .unwrap_or(expected.len().min(actual.len()));
    let around = |lines: &[&str]| {
        lines
            .iter()
            .enumerate()
            .skip(at.saturating_sub(2))
            .take(6)
            .map(|(n, line)| format!("  {:>5} | {line}", n + 1))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "first difference at line {}\n{}:\n{}\n{}:\n{}",
        at + 1,
        names[0],
        around(&expected),
        names[1],
        around(&actual)
    )
}

/// Compare a checked-in file with what the migrations give, or write it
/// when blessing.
fn pin(path: &Path, actual: &str) {
    if blessing() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(path).unwrap_or_default();
    let major = |text: &str| {
        text.lines()
            .take(3)
            .find_map(|line| line.split("(PostgreSQL ").nth(1))
            .and_then(|rest| rest.split(')').next())
            .map(str::to_owned)
    };
    if let (Some(checked_in), Some(server)) = (major(&expected), major(actual)) {
        assert!(
            checked_in == server,
            "`{}` was generated on PostgreSQL {checked_in}, the test server is PostgreSQL \
             {server}, and their dumps differ in form: compare on {checked_in} \
             (`MACHINE_STATE_PG_BINDIR=/usr/lib/postgresql/{checked_in}/bin`)",
            path.strip_prefix(repository()).unwrap_or(path).display(),
        );
    }
    assert!(
        expected == actual,
        "`{}` is not what the migrations create: regenerate it with\n    {BLESS}\nand commit it ({})",
        path.strip_prefix(repository()).unwrap_or(path).display(),
        first_difference(["checked in", "migrations create"], &expected, actual)
    );
}

#[test]
fn the_checked_in_schema_is_what_the_migrations_create() {
    let major = pg_dump_major();
    pin(
        &repository().join("sql/schema.sql"),
        &normalized_schema(&major),
    );
}

#[test]
fn each_function_has_its_current_definition_in_a_file_of_its_own() {
    let major = pg_dump_major();
    let dir: PathBuf = repository().join("sql/functions");
    let files = function_files(&major);
    let checked_in: Vec<String> = fs::read_dir(&dir)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".sql"))
                .collect()
        })
        .unwrap_or_default();
    let stale: Vec<&String> = checked_in
        .iter()
        .filter(|name| !files.contains_key(*name))
        .collect();
    if blessing() {
        for name in &stale {
            fs::remove_file(dir.join(name)).unwrap();
        }
    } else {
        assert!(
            stale.is_empty(),
            "`sql/functions/` holds {stale:?}, which the migrations do not create: regenerate with\n    {BLESS}"
        );
    }
    for (name, text) in &files {
        pin(&dir.join(name), text);
    }
}

#[derive(QueryableByName)]
struct Commented {
    #[diesel(sql_type = Text)]
    object: String,
    #[diesel(sql_type = Nullable<Text>)]
    comment: Option<String>,
}

/// Each of the three tables and each of their columns (`machines`,
/// `machines.status`, ...) with its `COMMENT ON`, in a migrated database.
fn table_comments(conn: &mut PgConnection) -> BTreeMap<String, Option<String>> {
    sql_query(
        "SELECT c.relname::text AS object, pg_catalog.obj_description(c.oid, 'pg_class') AS comment
         FROM pg_catalog.pg_class c
         WHERE c.oid IN ('machines'::regclass, 'machine_state'::regclass,
                         'machine_state_transitions'::regclass)
         UNION ALL
         SELECT a.attrelid::regclass::text || '.' || a.attname,
                pg_catalog.col_description(a.attrelid, a.attnum)
         FROM pg_catalog.pg_attribute a
         WHERE a.attrelid IN ('machines'::regclass, 'machine_state'::regclass,
                              'machine_state_transitions'::regclass)
           AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .load::<Commented>(conn)
    .unwrap()
    .into_iter()
    .map(|row| (row.object, row.comment))
    .collect()
}

/// The docs `src/schema.rs` gives each table and column, by the same names
/// as [`table_comments`]: the `///` lines above each `name (key) {` and
/// `name -> Type,` of a `diesel::table!`, joined by newlines.
fn schema_rs_docs(source: &str) -> BTreeMap<String, Option<String>> {
    let mut docs = BTreeMap::new();
    let mut pending: Vec<&str> = Vec::new();
    let mut table: Option<String> = None;
    for line in source.lines().map(str::trim) {
        if let Some(doc) = line.strip_prefix("///") {
            pending.push(doc.strip_prefix(' ').unwrap_or(doc));
            continue;
        }
        let doc = (!pending.is_empty()).then(|| pending.join("\n"));
        pending.clear();
        if line == "}" {
            table = None;
        } else if let Some((name, _)) = line.split_once(" (").filter(|_| line.ends_with('{')) {
            table = Some(name.to_owned());
            docs.insert(name.to_owned(), doc);
        } else if let (Some(table), Some((column, _))) = (&table, line.split_once(" -> ")) {
            docs.insert(format!("{table}.{column}"), doc);
        }
    }
    docs
}

#[test]
fn every_table_column_and_function_has_a_comment() {
    let db = TestDb::new();
    let mut conn = db.conn();
    let uncommented: Vec<String> = table_comments(&mut conn)
        .into_iter()
        .filter(|(_, comment)| comment.is_none())
        .map(|(object, _)| object)
        .chain(
            sql_query(include_str!("schema_functions.sql"))
                .load::<Function>(&mut conn)
                .unwrap()
                .into_iter()
                .filter(|function| function.comment.is_none())
                .map(|function| function.signature),
        )
        .collect();
    assert!(
        uncommented.is_empty(),
        "no `COMMENT ON` for {uncommented:?}: say in a migration what each holds or does \
         (for a function: who calls it, its SQLSTATEs), as 2026-12-05-400000 does"
    );
}

#[test]
fn schema_rs_docs_are_the_database_comments() {
    let db = TestDb::new();
    let comments = table_comments(&mut db.conn());
    let source = fs::read_to_string(repository().join("src/schema.rs")).unwrap();
    let docs = schema_rs_docs(&source);
    // diesel writes each line of a comment trimmed, after `/// `.
    let as_docs = |comment: &Option<String>| {
        comment
            .as_deref()
            .map(|c| c.lines().map(str::trim).collect::<Vec<_>>().join("\n"))
    };
    let differ: Vec<String> = comments
        .iter()
        .filter(|(object, comment)| docs.get(*object) != Some(&as_docs(comment)))
        .map(|(object, comment)| {
            format!(
                "`{object}`: the database says {:?}, src/schema.rs {:?}",
                comment,
                docs.get(object)
            )
        })
        .collect();
    assert!(
        differ.is_empty(),
        "src/schema.rs is not what `diesel print-schema` prints for the migrated tables \
         (regenerate it with `diesel print-schema` on a scratch database: \
         `sql/print_schema.sql` says how):\n{}",
        differ.join("\n")
    );
}

#[test]
fn the_last_migration_reverts_to_exactly_the_schema_before_it() {
    use diesel::migration::MigrationSource;
    use diesel_migrations::MigrationHarness;
    use machine_state::migrations::MIGRATIONS;

    let db = TestDb::empty();
    let mut conn = db.conn();
    let last = MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .unwrap()
        .len();
    for _ in 1..last {
        conn.run_next_migration(MIGRATIONS).unwrap();
    }
    let before = crate::support::schema_dump(&db);
    let applied = conn.run_next_migration(MIGRATIONS).unwrap().to_string();
    assert_ne!(
        crate::support::schema_dump(&db),
        before,
        "{applied} changed nothing"
    );
    machine_state::revert_last_migration(&mut conn).unwrap();
    let after = crate::support::schema_dump(&db);
    assert!(
        before == after,
        "reverting {applied} does not give back the schema before it ({})",
        first_difference(["before", "after the revert"], &before, &after)
    );
}
