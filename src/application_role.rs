//! The services' role: `machine_state_grant_application` and
//! `machine_state_revoke_application` (migrations 000005 and
//! 2026-12-05-200000), as library calls.

use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::Text;

use crate::error::Error;

#[derive(QueryableByName)]
struct Statement {
    #[diesel(sql_type = Text)]
    statement: String,
}

/// Let `role` read the three tables and run the transitions through the SQL
/// functions, and nothing else (`machine_state_grant_application`); returns
/// the statements it ran (none when the role had it all already). On
/// Supabase, the services' role is `service_role`.
///
/// # Errors
///
/// [`Error::Database`] when the role does not exist (SQLSTATE 42704) or this
/// connection's role may not grant (42501: run it as the owner).
pub fn grant_application(conn: &mut PgConnection, role: &str) -> Result<Vec<String>, Error> {
    run(conn, include_str!("grant_application.sql"), role)
}

/// Take back from `role` exactly what [`grant_application`] granted it
/// (`machine_state_revoke_application`); returns the statements it ran.
///
/// # Errors
///
/// As [`grant_application`].
pub fn revoke_application(conn: &mut PgConnection, role: &str) -> Result<Vec<String>, Error> {
    run(conn, include_str!("revoke_application.sql"), role)
}

fn run(conn: &mut PgConnection, query: &str, role: &str) -> Result<Vec<String>, Error> {
    Ok(sql_query(query)
        .bind::<Text, _>(role)
        .load::<Statement>(conn)?
        .into_iter()
        .map(|row| row.statement)
        .collect())
}
