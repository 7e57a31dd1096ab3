//! The crate's default path through PgBouncer 1.18 in transaction mode,
//! next to the same path direct: statements the server executed and round
//! trips the pooler forwarded per applied transition, and the latency ratio
//! pooler ÷ direct. Interleaved over the rounds, 1 connection, durable.
//!
//! Two roles go through the pooler: one whose sessions default to
//! REPEATABLE READ (`ALTER ROLE … SET default_transaction_isolation`, as
//! `sql/roles.sql` offers: one autocommit statement per transition), and a
//! plain one (the statement finds READ COMMITTED and runs again in an
//! explicit REPEATABLE READ transaction).

use std::fmt::Write as _;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use machine_state::EmbeddedPostgres;

#[path = "../../tests/integration/support/pgbouncer.rs"]
#[expect(dead_code, reason = "shared with the tests, which use all of it")]
mod pgbouncer;

use crate::{Path, Plan, reset_statements, statement_totals, verify, workload};

/// The role whose sessions default to REPEATABLE READ.
const ROLE: &str = "bench_repeatable_read";

/// One way to reach the server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Direct,
    PoolerRoleDefault,
    PoolerPlain,
}

impl Route {
    const ALL: [Route; 3] = [Route::Direct, Route::PoolerRoleDefault, Route::PoolerPlain];

    fn label(self) -> &'static str {
        match self {
            Route::Direct => "crate/default, direct",
            Route::PoolerRoleDefault => "crate/default, PgBouncer, role defaults to RR",
            Route::PoolerPlain => "crate/default, PgBouncer, plain role",
        }
    }
}

/// Per route: statements, round trips and latencies over every round.
#[derive(Default)]
struct Totals {
    statements_per_tx: Vec<f64>,
    round_trips_per_tx: Vec<f64>,
    latencies_us: Vec<f64>,
}

/// What the comparison found.
pub struct PoolerReport {
    rows: Vec<(Route, Totals)>,
}

impl PoolerReport {
    /// The section of `results.md`.
    pub fn markdown(&self) -> String {
        let mut text = String::from(
            "## Through a transaction-mode pooler (PgBouncer 1.18, 1 conn, durable)\n\n\
             | path | statements / transition | round trips / transition | p50 µs | p50 ÷ direct |\n\
             |---|---|---|---|---|\n",
        );
        let direct = self
            .rows
            .iter()
            .find(|(route, _)| *route == Route::Direct)
            .map_or(f64::NAN, |(_, t)| p50(&t.latencies_us));
        for (route, totals) in &self.rows {
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
            let latency = p50(&totals.latencies_us);
            let _ = writeln!(
                text,
                "| {} | {:.2} | {:.2} | {latency:.0} | {:.2} |",
                route.label(),
                mean(&totals.statements_per_tx),
                mean(&totals.round_trips_per_tx),
                latency / direct,
            );
        }
        text.push_str(
            "\nStatements: `pg_stat_statements` (`BEGIN`/`COMMIT` included). Round trips: \
             direct, one per statement; through the pooler, its own count of queries \
             (`SHOW STATS`). Each run's machines and history rows are checked as above.\n",
        );
        text
    }
}

/// Run the comparison on the `bench` database of `server`.
pub fn run(
    server: &EmbeddedPostgres,
    bench: &mut PgConnection,
    plan: Plan,
    rounds: usize,
    mut last_history: i64,
) -> Result<PoolerReport, String> {
    bench
        .batch_execute(&format!(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
                     CREATE ROLE {ROLE} LOGIN SUPERUSER;
                 END IF;
             END $$;
             ALTER ROLE {ROLE} SET default_transaction_isolation = 'repeatable read';"
        ))
        .map_err(|e| format!("cannot create the role `{ROLE}`: {e}"))?;
    let bouncer = pgbouncer::PgBouncer::start(server.socket_dir(), &[ROLE])?;
    let psql = server.bin_dir().join("psql");
    let url = |route: Route| match route {
        Route::Direct => server.url("bench"),
        Route::PoolerRoleDefault => pooler_url(&bouncer, ROLE),
        Route::PoolerPlain => pooler_url(&bouncer, "postgres"),
    };
    let mut rows: Vec<(Route, Totals)> = Route::ALL
        .iter()
        .map(|&route| (route, Totals::default()))
        .collect();
    for round in 0..rounds {
        let plan = plan.in_round(round);
        let mut order = Route::ALL;
        order.rotate_left(round % Route::ALL.len());
        for route in order {
            // The pooler's counts from the moment the clients have loaded
            // their machines (untimed) to the end of the run.
            let mut before = None;
            let measured = workload::run(&url(route), Path::Default, &plan, || {
                reset_statements(bench)?;
                before = Some(bouncer.stats(&psql, "bench").unwrap_or((0, 0)));
                Ok(())
            })?;
            let statements = statement_totals(bench)?.calls;
            let after = bouncer.stats(&psql, "bench").unwrap_or((0, 0));
            last_history = verify(bench, Path::Default, &plan, last_history)?;
            let transactions = measured.latencies_us.len() as f64;
            let round_trips = match (route, before) {
                (Route::Direct, _) => statements,
                (_, Some(before)) => (after.1 - before.1) as f64,
                (_, None) => return Err("the run never started".into()),
            };
            let totals = &mut rows
                .iter_mut()
                .find(|(r, _)| *r == route)
                .ok_or("a route without totals")?
                .1;
            totals.statements_per_tx.push(statements / transactions);
            totals.round_trips_per_tx.push(round_trips / transactions);
            totals.latencies_us.extend(measured.latencies_us);
        }
    }
    Ok(PoolerReport { rows })
}

/// The pooler's URL for the bench database as `user`, with the crate's
/// pooler switch.
fn pooler_url(bouncer: &pgbouncer::PgBouncer, user: &str) -> String {
    format!(
        "{}&machine_state_pooler=transaction",
        bouncer.url_as(user, "bench")
    )
}

/// The median of `values`.
fn p50(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}
