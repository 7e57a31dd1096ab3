//! Clean under Supabase's own tools (`supabase db lint`): plpgsql_check, with
//! extra, performance and security warnings, over every plpgsql function of
//! ours (each trigger function with the tables it fires on), on a fresh and on
//! an adopted project. One `function: finding` line per finding, so a function
//! added later that does not pass says which and why.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::Text;

use crate::adoption::LEGACY_FIXTURE;
use crate::supabase::supabase_db;
use crate::support::TestDb;

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = Text)]
    value: String,
}

/// plpgsql_check's findings on every plpgsql function of ours: those in the
/// schema of `machines` named `machine_state_*` or `atomic_*`, and those of
/// `machine_state_private`; the legacy functions parked in
/// `machine_state_replaced` are the legacy system's. Trigger functions are
/// checked once per table they fire on (`NEW` and `OLD` are that table's).
/// plpgsql_check needs a superuser to install (Supabase installs it for
/// `supabase db lint`); it runs here as the test server's superuser.
pub(crate) fn plpgsql_check_findings(db: &TestDb) -> Vec<String> {
    let url = crate::supabase::url_as(&db.url, "postgres");
    let conn = &mut PgConnection::establish(&url).unwrap();
    conn.batch_execute("CREATE EXTENSION IF NOT EXISTS plpgsql_check SCHEMA extensions")
        .unwrap();
    sql_query(include_str!("plpgsql_check.sql"))
        .load::<Value>(conn)
        .unwrap()
        .into_iter()
        .map(|v| v.value)
        .collect()
}

#[test]
fn plpgsql_check_finds_nothing_in_our_functions_on_a_fresh_project() {
    let db = supabase_db(None);
    assert_eq!(plpgsql_check_findings(&db), Vec::<String>::new());
}

#[test]
fn plpgsql_check_finds_nothing_in_our_functions_on_an_adopted_project() {
    let db = supabase_db(Some(LEGACY_FIXTURE));
    assert_eq!(plpgsql_check_findings(&db), Vec::<String>::new());
}
