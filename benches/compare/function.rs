//! Issue 13 (c): the SQL function `machine_state_transition` (what Python
//! callers and `WritePath::SqlFunction` run), from the main scenarios'
//! runs: its server time against the crate's statement, its 4-connection
//! throughput against the floor; and, as evidence, one more run of
//! `pgbench/function` with `pg_stat_statements.track = all`, which times
//! the statements inside the function.

use std::fmt::Write as _;

use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Bool, Double, Text};

use crate::goal::{self, Goal};
use crate::{Path, Plan, Results, Run, pgbench, reset_statements, verify};

fn server_us(run: &Run) -> f64 {
    run.exec_us_per_tx + run.plan_us_per_tx
}

/// The goals of (c), from the durable 1- and 4-connection scenarios.
pub fn goals(plans: &[Plan], results: &Results) -> Vec<Goal> {
    let mut goals = Vec::new();
    let runs = |s: usize, p: Path| results.get(&(s, p)).map_or(&[][..], Vec::as_slice);
    for clients in [1, 4] {
        let Some(s) = plans.iter().position(|p| p.durable && p.clients == clients) else {
            continue;
        };
        for path in [Path::Function, Path::CrateFunction] {
            let ratios: Vec<f64> = runs(s, path)
                .iter()
                .zip(runs(s, Path::Default))
                .map(|(f, d)| server_us(f) / server_us(d))
                .collect();
            goals.push(
                Goal::at_most(
                    format!(
                        "(c) {clients} conn: `{}` server time ÷ `crate/default`'s",
                        path.label()
                    ),
                    goal::median(&ratios),
                    1.2,
                    "×",
                )
                .note(goal::range(&ratios)),
            );
        }
        if clients == 4 {
            for path in [Path::Function, Path::CrateFunction] {
                let ratios: Vec<f64> = (0..runs(s, path).len())
                    .filter_map(|r| {
                        let tps = |p: Path| runs(s, p).get(r).map(|run| run.measured.tps);
                        Some(tps(path)? / tps(Path::Function)?.max(tps(Path::Cte)?))
                    })
                    .collect();
                goals.push(
                    Goal::at_least(
                        format!(
                            "(c) 4 conn: `{}` throughput ÷ floor (best one-statement pgbench)",
                            path.label()
                        ),
                        goal::median(&ratios),
                        0.95,
                        "×",
                    )
                    .note(goal::range(&ratios)),
                );
            }
        }
    }
    goals
}

#[derive(QueryableByName)]
struct Statement {
    #[diesel(sql_type = Text)]
    query: String,
    #[diesel(sql_type = Bool)]
    toplevel: bool,
    #[diesel(sql_type = Double)]
    calls: f64,
    #[diesel(sql_type = Double)]
    exec_ms: f64,
    #[diesel(sql_type = Double)]
    plan_ms: f64,
}

/// Run `pgbench/function` once more with `pg_stat_statements.track = all`
/// and list what the server spent, statement by statement, per transition.
pub fn diagnose(
    bench: &mut PgConnection,
    target: &pgbench::Target<'_>,
    plan: &Plan,
    last_history: &mut i64,
) -> Result<String, String> {
    let target = pgbench::Target {
        options: "-c pg_stat_statements.track=all",
        ..*target
    };
    reset_statements(bench)?;
    let measured = pgbench::run(&target, Path::Function, plan)?;
    *last_history = verify(bench, Path::Function, plan, *last_history)?;
    let n = measured.latencies_us.len() as f64;
    let statements: Vec<Statement> = sql_query(
        "SELECT regexp_replace(s.query, '\\s+', ' ', 'g') AS query, s.toplevel,
                s.calls::float8 AS calls, s.total_exec_time AS exec_ms,
                s.total_plan_time AS plan_ms
         FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
         WHERE d.datname = current_database() AND s.query NOT LIKE '%pg_stat_statements%'
         ORDER BY s.toplevel DESC, s.total_exec_time DESC LIMIT 12",
    )
    .load(bench)
    .map_err(|e| format!("cannot read pg_stat_statements: {e}"))?;
    let mut text = String::from(
        "### Inside the SQL function (`pgbench/function`, 1 conn, durable, \
         `pg_stat_statements.track = all`)\n\n\
         Per transition; nested statements' time is included in the top-level call's.\n\n\
         | level | statement | calls | exec µs | plan µs |\n|---|---|---|---|---|\n",
    );
    for s in &statements {
        let mut query: String = s.query.chars().take(110).collect();
        if query.len() < s.query.len() {
            query.push('…');
        }
        let _ = writeln!(
            text,
            "| {} | `{}` | {:.2} | {:.1} | {:.1} |",
            if s.toplevel { "top" } else { "nested" },
            query.replace('|', "\\|").replace('`', "'"),
            s.calls / n,
            s.exec_ms * 1000.0 / n,
            s.plan_ms * 1000.0 / n,
        );
    }
    Ok(text)
}
