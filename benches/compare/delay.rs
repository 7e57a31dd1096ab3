//! Issue 13 (b): a network in the way. The same 1-connection walk as the
//! main scenarios, with `synchronous_commit=off`, through [`DelayProxy`]
//! (about 1 ms round trip), for the crate's default path, the legacy
//! two-write and pgbench's one-statement floor, interleaved over the rounds.
//! Commits do not wait for the disk here: on this shared machine a flush
//! takes 0.2–3 ms, is not timed by `pg_stat_statements`, and would swamp the
//! client-side time this scenario is after.
//!
//! Client-side time is what is left of a p50 when the network (round trips
//! × RTT, RTT being `pgbench/select_1`'s p50 through the proxy) and the
//! server (`pg_stat_statements` execution and planning) are taken out: the
//! driver, the pool, the crate's own work, and the commit's flush, which
//! `pg_stat_statements` does not time (the same for every path).

use std::fmt::Write as _;
use std::time::Duration;

use diesel::PgConnection;
use machine_state::EmbeddedPostgres;

use crate::goal::{self, Goal};
use crate::proxy::DelayProxy;
use crate::{Path, Plan, Run, measure, pgbench, verify};

/// Half the round trip.
pub const ONE_WAY: Duration = Duration::from_micros(500);

const PATHS: [Path; 5] = [
    Path::Select1,
    Path::Cte,
    Path::Function,
    Path::Legacy,
    Path::Default,
];

pub struct DelayReport {
    /// Per path, its run of each round.
    runs: Vec<(Path, Vec<Run>)>,
    pub goals: Vec<Goal>,
}

/// Per round: the p50, and the client-side time (µs).
fn p50(run: &Run) -> f64 {
    goal::median(&run.measured.latencies_us)
}

fn client_side(run: &Run, rtt: f64) -> f64 {
    p50(run) - run.statements_per_tx * rtt - run.exec_us_per_tx - run.plan_us_per_tx
}

pub fn run(
    server: &EmbeddedPostgres,
    bench: &mut PgConnection,
    pgbench_bin: &std::path::Path,
    work_dir: &std::path::Path,
    plan: Plan,
    rounds: usize,
    last_history: &mut i64,
) -> Result<DelayReport, String> {
    let proxy = DelayProxy::start(server.socket_dir(), ONE_WAY)?;
    let mut url = proxy.url("bench");
    if !plan.durable {
        url.push_str("&options=-c%20synchronous_commit%3Doff");
    }
    let target = pgbench::Target {
        pgbench: pgbench_bin,
        socket_dir: proxy.socket_dir(),
        database: "bench",
        work_dir,
        options: "",
    };
    let mut runs: Vec<(Path, Vec<Run>)> = PATHS.iter().map(|&p| (p, Vec::new())).collect();
    for round in 0..rounds {
        let plan = plan.in_round(round);
        let mut order: Vec<usize> = (0..PATHS.len()).collect();
        order.rotate_left(round % PATHS.len());
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let path = PATHS[i];
            let run = measure(bench, &target, &url, path, &plan)?;
            *last_history = verify(bench, path, &plan, *last_history)?;
            runs[i].1.push(run);
        }
        println!("delay proxy: round {}/{rounds} done", round + 1);
    }
    drop(proxy);

    let of = |path: Path| &runs[PATHS.iter().position(|p| *p == path).unwrap_or(0)].1;
    let (mut vs_floor, mut vs_legacy, mut client_gap) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let rtt = p50(&of(Path::Select1)[r]);
        let floor = [&of(Path::Cte)[r], &of(Path::Function)[r]]
            .into_iter()
            .min_by(|a, b| p50(a).total_cmp(&p50(b)))
            .ok_or("no floor")?;
        let default = &of(Path::Default)[r];
        vs_floor.push(p50(default) / p50(floor));
        vs_legacy.push(p50(default) / p50(&of(Path::Legacy)[r]));
        client_gap.push(client_side(default, rtt) - client_side(floor, rtt));
    }
    let goals = vec![
        Goal::at_most(
            "(b) 1 ms RTT: `crate/default` p50 ÷ pgbench one-statement floor p50",
            goal::median(&vs_floor),
            1.03,
            "×",
        )
        .note(goal::range(&vs_floor)),
        Goal::at_most(
            "(b) 1 ms RTT: `crate/default` p50 ÷ `pgbench/legacy_two_write` p50",
            goal::median(&vs_legacy),
            0.57,
            "×",
        )
        .note(goal::range(&vs_legacy)),
        Goal::at_most(
            "(b) 1 ms RTT: client-side time, crate − pgbench floor",
            goal::median(&client_gap),
            20.0,
            " µs",
        )
        .note(format!(
            "µs {}",
            goal::range(&client_gap).trim_start_matches("rounds ")
        )),
    ];
    Ok(DelayReport { runs, goals })
}

impl DelayReport {
    pub fn markdown(&self) -> String {
        let mut text = String::from(
            "## (b) Through a delay proxy (about 1 ms round trip; 1 conn, `synchronous_commit=off`)\n\n\
             Medians over rounds. RTT = `pgbench/select_1` p50 through the proxy; \
             client-side = p50 − statements × RTT − server exec − server plan.\n\n\
             | path | p50 µs | p99 µs | statements | network µs | server exec µs | server plan µs | client-side µs |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        let rtts: Vec<f64> = self
            .runs
            .iter()
            .find(|(p, _)| *p == Path::Select1)
            .map(|(_, runs)| runs.iter().map(p50).collect())
            .unwrap_or_default();
        for (path, runs) in &self.runs {
            let per = |f: &dyn Fn(usize, &Run) -> f64| {
                let values: Vec<f64> = runs.iter().enumerate().map(|(r, run)| f(r, run)).collect();
                goal::median(&values)
            };
            let rtt = |r: usize| rtts.get(r).copied().unwrap_or(f64::NAN);
            let _ = writeln!(
                text,
                "| `{}` | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} |",
                path.label(),
                per(&|_, run| p50(run)),
                per(&|_, run| goal::quantile(&run.measured.latencies_us, 0.99)),
                per(&|_, run| run.statements_per_tx),
                per(&|r, run| run.statements_per_tx * rtt(r)),
                per(&|_, run| run.exec_us_per_tx),
                per(&|_, run| run.plan_us_per_tx),
                per(&|r, run| client_side(run, rtt(r))),
            );
        }
        text
    }
}
