//! Issue 13 (e): the whole-fleet reads over 100,000 machines: `audit` (every
//! pair checked against I1–I5), `pairs` (what the CLI's `list` prints) and
//! `stuck` (machines processing for over an hour), timed over the rounds,
//! each result checked; and the plan of `stuck`'s own statement, taken from
//! `pg_stat_statements` and run under `EXPLAIN (ANALYZE, BUFFERS)`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::Text;
use machine_state::EmbeddedPostgres;

use crate::connect;
use crate::goal::{self, Goal};

pub const MACHINES: u32 = 100_000;
/// Every 100th machine has been processing for over two hours.
const STUCK: usize = (MACHINES / 100) as usize;

pub struct FleetReport {
    audit_s: Vec<f64>,
    pairs_s: Vec<f64>,
    stuck_s: Vec<f64>,
    plan: Vec<String>,
    pub goals: Vec<Goal>,
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    #[diesel(column_name = "QUERY PLAN")]
    line: String,
}

#[derive(QueryableByName)]
struct Query {
    #[diesel(sql_type = Text)]
    query: String,
}

/// 100,000 consistent machines, as `Machine::create` and `start` leave them
/// (both rows and their history), written in one transaction.
fn seed(conn: &mut PgConnection) -> Result<(), String> {
    conn.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ;
         CREATE TEMP TABLE fleet ON COMMIT DROP AS
             SELECT lpad(to_hex(g), 32, '0')::uuid AS id,
                    CASE WHEN g % 100 = 0 THEN 'processing' ELSE 'idle' END AS state,
                    CASE WHEN g % 100 = 0
                         THEN ('3' || lpad(to_hex(g), 31, '0'))::uuid END AS process,
                    CASE WHEN g % 100 = 0 THEN now() - interval '2 hours' - g * interval '1 s'
                         ELSE now() - g * interval '1 s' END AS since
             FROM generate_series(1, {MACHINES}) g;
         INSERT INTO machines (id, status, current_process_id, created_at, updated_at)
             SELECT id, state, process, since - interval '1 day', since FROM fleet;
         INSERT INTO machine_state
             (machine_id, current_state, state_since, process_id, is_failure_mode, updated_at)
             SELECT id, state, since, process, false, since FROM fleet;
         INSERT INTO machine_state_transitions
             (machine_id, from_state, to_state, operation_id, kind, transitioned_at)
             SELECT id, NULL, 'idle', gen_random_uuid(), 'create', since - interval '1 day'
             FROM fleet;
         INSERT INTO machine_state_transitions
             (machine_id, from_state, to_state, process_id, operation_id, kind, transitioned_at)
             SELECT id, 'idle', 'processing', process, gen_random_uuid(), 'transition', since
             FROM fleet WHERE state = 'processing';
         COMMIT;"
    ))
    .map_err(|e| format!("cannot seed {MACHINES} machines: {e}"))?;
    conn.batch_execute("VACUUM ANALYZE machines, machine_state, machine_state_transitions")
        .map_err(|e| format!("cannot vacuum: {e}"))
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed().as_secs_f64())
}

pub fn run(
    server: &EmbeddedPostgres,
    admin: &mut PgConnection,
    rounds: usize,
) -> Result<FleetReport, String> {
    admin
        .batch_execute("CREATE DATABASE fleet")
        .map_err(|e| format!("cannot create the database `fleet`: {e}"))?;
    let conn = &mut connect(&server.url("fleet"))?;
    machine_state::run_migrations(conn).map_err(|e| format!("cannot migrate: {e}"))?;
    conn.batch_execute("CREATE EXTENSION pg_stat_statements")
        .map_err(|e| format!("cannot create pg_stat_statements: {e}"))?;
    seed(conn)?;
    let hour = Duration::from_secs(3600);
    let (mut audit_s, mut pairs_s, mut stuck_s) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (report, seconds) = timed(|| machine_state::audit::audit(conn));
        let report = report.map_err(|e| format!("audit: {e}"))?;
        if report.machines != MACHINES as usize || !report.is_consistent() {
            return Err(format!(
                "audit saw {} machines, {} diverged; expected {MACHINES}, none",
                report.machines,
                report.diverged.len()
            ));
        }
        audit_s.push(seconds);
        let (pairs, seconds) = timed(|| machine_state::audit::pairs(conn));
        let pairs = pairs.map_err(|e| format!("pairs: {e}"))?;
        if pairs.len() != MACHINES as usize {
            return Err(format!("pairs listed {} machines", pairs.len()));
        }
        pairs_s.push(seconds);
        let (stuck, seconds) = timed(|| machine_state::audit::stuck(conn, hour));
        let stuck = stuck.map_err(|e| format!("stuck: {e}"))?;
        let oldest_first = stuck.windows(2).all(|w| w[0].since <= w[1].since);
        if stuck.len() != STUCK || !oldest_first {
            return Err(format!(
                "stuck found {} machines (expected {STUCK}), oldest first: {oldest_first}",
                stuck.len()
            ));
        }
        stuck_s.push(seconds);
    }

    // `stuck`'s statement as the server saw it (diesel's binds: the two
    // states, then the interval), planned for the same arguments.
    conn.batch_execute("SELECT pg_stat_statements_reset()")
        .map_err(|e| format!("cannot reset pg_stat_statements: {e}"))?;
    machine_state::audit::stuck(conn, hour).map_err(|e| format!("stuck: {e}"))?;
    let query = sql_query(
        "SELECT query FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
         WHERE d.datname = current_database() AND query LIKE '%state_since%'
           AND query LIKE '%$3%' AND query NOT LIKE '%pg_stat_statements%'",
    )
    .get_result::<Query>(conn)
    .map_err(|e| format!("cannot find `stuck`'s statement in pg_stat_statements: {e}"))?
    .query;
    conn.batch_execute(&format!(
        "PREPARE stuck_plan(text, text, interval) AS {query}"
    ))
    .map_err(|e| format!("cannot prepare `{query}`: {e}"))?;
    let plan: Vec<String> = sql_query(
        "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) \
         EXECUTE stuck_plan('processing', 'processing', '1 hour')",
    )
    .load::<Line>(conn)
    .map_err(|e| format!("cannot explain `stuck`: {e}"))?
    .into_iter()
    .map(|l| l.line)
    .collect();
    let full_scan = plan.iter().any(|l| l.contains("Seq Scan"));
    let indexed = plan
        .iter()
        .any(|l| l.contains("Index Scan") || l.contains("Index Only Scan"));
    let audit = goal::median(&audit_s);
    let goals = vec![
        Goal::at_most(
            format!("(e) `audit` over {MACHINES} machines"),
            audit,
            1.0,
            " s",
        )
        .note(format!(
            "`pairs` (`list`) {:.2} s, `stuck` {:.3} s",
            goal::median(&pairs_s),
            goal::median(&stuck_s)
        )),
        Goal::holds(
            "(e) `stuck` uses an index, no sequential scan (EXPLAIN)",
            indexed && !full_scan,
        ),
    ];
    Ok(FleetReport {
        audit_s,
        pairs_s,
        stuck_s,
        plan,
        goals,
    })
}

impl FleetReport {
    pub fn markdown(&self) -> String {
        let mut text = format!(
            "## (e) Whole-fleet reads over {MACHINES} machines ({STUCK} processing for over \
             2 hours)\n\n\
             | call | median s | range s |\n|---|---|---|\n"
        );
        for (name, values) in [
            ("`audit`", &self.audit_s),
            ("`pairs` (the CLI's `list`)", &self.pairs_s),
            ("`stuck` (over 1 hour)", &self.stuck_s),
        ] {
            let _ = writeln!(
                text,
                "| {name} | {:.3} | {} |",
                goal::median(values),
                goal::range(values).trim_start_matches("rounds ")
            );
        }
        text.push_str("\n`stuck`'s statement, `EXPLAIN (ANALYZE, BUFFERS)`:\n\n```text\n");
        for line in &self.plan {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("```\n");
        text
    }
}
