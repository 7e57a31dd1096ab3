//! Statements kept in `.sql` files, runnable in psql as they are (with
//! `PREPARE`), sent through diesel's query builder so that they keep a
//! static query id (prepared once per connection).
//!
//! A file's `$n` placeholders are numbered as in psql; diesel numbers binds
//! by occurrence, so each occurrence of `$n` is sent as a bind of the n-th
//! value. Lines that start with `--` are left out.

use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::AstPass;

/// Push `sql` into `out`, calling `bind(n, out)` in place of each `$n`.
pub(super) fn walk<'b>(
    sql: &str,
    out: &mut AstPass<'_, 'b, Pg>,
    mut bind: impl FnMut(u8, &mut AstPass<'_, 'b, Pg>) -> QueryResult<()>,
) -> QueryResult<()> {
    for line in sql.lines().filter(|l| !l.trim_start().starts_with("--")) {
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.push_sql(&rest[..at]);
            let digits = rest[at + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            let number = &rest[at + 1..at + 1 + digits];
            match number.parse::<u8>() {
                Ok(n) => bind(n, out)?,
                Err(_) => out.push_sql("$"),
            }
            rest = &rest[at + 1 + digits..];
        }
        out.push_sql(rest);
        out.push_sql("\n");
    }
    Ok(())
}

/// The error of a placeholder that names no bind: a mistake in a `.sql` file.
pub(super) fn no_such_bind(n: u8) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(format!("no bind `${n}` in this statement").into())
}
