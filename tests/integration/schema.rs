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
//! print-schema` (diesel.toml, `with_docs`); its docs are checked here.

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
/// the `\restrict` key, diesel's bookkeeping table; runs of blank lines
/// folded into one.
fn normalized_schema(major: &str) -> String {
    let db = TestDb::new();
    let dump = crate::support::schema_dump(&db);
    let mut lines = vec![
        "-- The schema the migrations create, as `pg_dump --schema-only` prints it".to_owned(),
        format!("-- (PostgreSQL {major}) for a freshly migrated database. Generated: do not edit;"),
        "-- change the schema with a new migration, then regenerate this file with".to_owned(),
        format!("--   {BLESS}"),
        "-- Each function's definition is also in sql/functions/<name>.sql.".to_owned(),
        String::new(),
    ];
    for line in dump.lines() {
        let varies = line.starts_with("-- Dumped from database version")
            || line.starts_with("-- Dumped by pg_dump version")
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

/// Where `expected` (checked in) and `actual` first differ, with a few lines
/// of each around it.
fn first_difference(expected: &str, actual: &str) -> String {
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
        "first difference at line {}\nchecked in:\n{}\nmigrations create:\n{}",
        at + 1,
        around(&expected),
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
    assert!(
        expected == actual,
        "`{}` is not what the migrations create: regenerate it with\n    {BLESS}\nand commit it ({})",
        path.strip_prefix(repository()).unwrap_or(path).display(),
        first_difference(&expected, actual)
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
