//! Clean under Supabase's own tools (`supabase db lint`): plpgsql_check, with
//! extra, performance and security warnings, over every plpgsql function of
//! ours (each trigger function with the tables it fires on), on a fresh and on
//! an adopted project, and splinter's rules (`splinter.sql`). One line per
//! finding (`function: finding`, `rule: object`), so a function
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

/// Splinter's rules (`splinter.sql`) over the whole database: every finding
/// but one kept on purpose: the history's daily partitions have no index on
/// `machine_id` (migration 2026-12-05-300000: that index cost a full-page
/// image per transition once the history was long; a machine's entries are
/// found by their chain), so their foreign key to `machines` is unindexed
/// (0001) and deleting a machine reads them whole.
pub(crate) fn splinter_findings(conn: &mut PgConnection) -> Vec<String> {
    sql_query(include_str!("splinter.sql"))
        .load::<Value>(conn)
        .unwrap()
        .into_iter()
        .map(|v| v.value)
        .filter(|f| {
            !(f.starts_with("0001 unindexed_foreign_keys: public.machine_state_transitions_p")
                && f.ends_with(" machine_state_transitions_machine_id_fkey"))
        })
        .collect()
}

/// Whether a finding is about an object of machine-state: the history,
/// diesel's table, the bookkeeping, our functions, and what we added to the
/// adopted tables; the legacy system's own objects (`users`, its foreign
/// key from `machines`) are not.
fn ours(finding: &str) -> bool {
    let object = finding.split(": ").nth(1).unwrap_or_default();
    !object.starts_with("public.users") && !object.ends_with("machines_admin_id_fkey")
}

#[test]
fn splinter_finds_nothing_on_a_fresh_project() {
    let db = supabase_db(None);
    let conn = &mut db.conn();
    assert_eq!(splinter_findings(conn), Vec::<String>::new());
}

#[test]
fn splinter_on_an_adopted_project_finds_rls_off_and_after_doctor_fix_only_the_kept_dashboard_edits()
{
    let db = supabase_db(Some(LEGACY_FIXTURE));
    let conn = &mut db.conn();
    let before: Vec<String> = splinter_findings(conn)
        .into_iter()
        .filter(|f| ours(f))
        .collect();
    assert_eq!(
        before,
        [
            "0013 rls_disabled_in_public: public.machine_state",
            "0013 rls_disabled_in_public: public.machines",
        ]
    );
    machine_state::doctor::fix_exposures(conn).unwrap();
    machine_state::doctor::grant_application(conn, "service_role").unwrap();
    let after: Vec<String> = splinter_findings(conn)
        .into_iter()
        .filter(|f| ours(f))
        .collect();
    // The one finding left is the dashboards' edits of `machines`' descriptive
    // columns, which the fix keeps on purpose (the legacy grants allowed
    // them): any signed-in user may edit any machine's location. Restricting
    // that needs the project's ownership model (say `admin_id = auth.uid()`),
    // which the operators decide.
    assert_eq!(
        after,
        ["0024 rls_policy_always_true: public.machines machine_state_describe"]
    );
    assert_eq!(plpgsql_check_findings(&db), Vec::<String>::new());
}
