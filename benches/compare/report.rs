//! Turning the runs into ratios, tables and a plot.

use std::fmt::Write as _;

use crate::{Path, Plan, Results, Run};

/// The `q` quantile of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

fn median(values: Vec<f64>) -> f64 {
    quantile(&sorted(values), 0.5)
}

fn run_quantile(run: &Run, q: f64) -> f64 {
    quantile(&sorted(run.measured.latencies_us.clone()), q)
}

/// A ratio over all rounds, and its range over single rounds.
struct Ratio {
    median: f64,
    min: f64,
    max: f64,
}

impl Ratio {
    fn of(overall: f64, per_round: Vec<f64>) -> Ratio {
        let per_round = sorted(per_round);
        Ratio {
            median: overall,
            min: per_round.first().copied().unwrap_or(f64::NAN),
            max: per_round.last().copied().unwrap_or(f64::NAN),
        }
    }

    fn missing() -> Ratio {
        Ratio::of(f64::NAN, Vec::new())
    }

    fn cell(&self) -> String {
        format!("**{:.2}** ({:.2}–{:.2})", self.median, self.min, self.max)
    }
}

/// A target on a ratio.
#[derive(Clone, Copy)]
enum Target {
    AtMost(f64),
    AtLeast(f64),
    Info,
}

impl Target {
    fn describe(self) -> String {
        match self {
            Target::AtMost(x) => format!("≤ {x:.2}"),
            Target::AtLeast(x) => format!("≥ {x:.2}"),
            Target::Info => "—".into(),
        }
    }

    fn met(self, ratio: &Ratio) -> Option<bool> {
        if ratio.median.is_nan() {
            return None;
        }
        match self {
            Target::AtMost(x) => Some(ratio.median <= x),
            Target::AtLeast(x) => Some(ratio.median >= x),
            Target::Info => None,
        }
    }
}

/// Everything a report is made of.
pub struct Report<'a> {
    pub plans: &'a [Plan],
    pub results: &'a Results,
}

impl Report<'_> {
    fn scenario(&self, clients: u32, durable: bool) -> Option<usize> {
        self.plans
            .iter()
            .position(|p| p.clients == clients && p.durable == durable)
    }

    fn runs(&self, scenario: usize, path: Path) -> &[Run] {
        self.results
            .get(&(scenario, path))
            .map_or(&[], Vec::as_slice)
    }

    fn rounds(&self) -> usize {
        self.results.values().map(Vec::len).min().unwrap_or(0)
    }

    /// The median latency of a path in one round, or over the transactions of
    /// all rounds (`None`): every path ran in every round, so bursts of noise
    /// from the rest of the machine are spread over all of them.
    fn p50(&self, scenario: usize, path: Path, round: Option<usize>) -> f64 {
        let runs = self.runs(scenario, path);
        match round {
            Some(round) => run_quantile(&runs[round], 0.5),
            None => median(
                runs.iter()
                    .flat_map(|run| run.measured.latencies_us.iter().copied())
                    .collect(),
            ),
        }
    }

    /// The throughput of a path in one round, or its median over rounds.
    fn tps(&self, scenario: usize, path: Path, round: Option<usize>) -> f64 {
        let runs = self.runs(scenario, path);
        match round {
            Some(round) => runs[round].measured.tps,
            None => median(runs.iter().map(|run| run.measured.tps).collect()),
        }
    }

    /// The best one-statement pgbench p50: the floor.
    fn floor_p50(&self, scenario: usize, round: Option<usize>) -> f64 {
        self.p50(scenario, Path::Function, round)
            .min(self.p50(scenario, Path::Cte, round))
    }

    fn best_tps(&self, scenario: usize, round: Option<usize>) -> f64 {
        self.tps(scenario, Path::Function, round)
            .max(self.tps(scenario, Path::Cte, round))
    }

    /// A ratio over all rounds, with its range over single rounds.
    fn ratio(&self, f: impl Fn(Option<usize>) -> f64) -> Ratio {
        Ratio::of(f(None), (0..self.rounds()).map(|r| f(Some(r))).collect())
    }

    /// The ratio rows: (what, target, durable, sync off).
    fn ratios(&self) -> Vec<(String, Target, Ratio, Ratio)> {
        let both = |what: &str, target, clients, f: &dyn Fn(usize, Option<usize>) -> f64| {
            let of = |durable| match self.scenario(clients, durable) {
                Some(s) => self.ratio(|r| f(s, r)),
                None => Ratio::missing(),
            };
            (what.to_owned(), target, of(true), of(false))
        };
        vec![
            both(
                "`crate/default` p50 ÷ best one-statement pgbench p50 (1 conn)",
                Target::AtMost(1.10),
                1,
                &|s, r| self.p50(s, Path::Default, r) / self.floor_p50(s, r),
            ),
            both(
                "`crate/default` p50 ÷ `pgbench/legacy_two_write` p50 (1 conn)",
                Target::AtMost(0.65),
                1,
                &|s, r| self.p50(s, Path::Default, r) / self.p50(s, Path::Legacy, r),
            ),
            both(
                "`crate/default` tps ÷ best one-statement pgbench tps (4 conns)",
                Target::AtLeast(0.90),
                4,
                &|s, r| self.tps(s, Path::Default, r) / self.best_tps(s, r),
            ),
            both(
                "`crate/query_builder` p50 ÷ floor (best one-statement pgbench p50, 1 conn)",
                Target::AtMost(2.0),
                1,
                &|s, r| self.p50(s, Path::QueryBuilder, r) / self.floor_p50(s, r),
            ),
            both(
                "floor ÷ `pgbench/legacy_two_write` p50: the best pgbench can do (1 conn)",
                Target::Info,
                1,
                &|s, r| self.floor_p50(s, r) / self.p50(s, Path::Legacy, r),
            ),
            both(
                "`crate/default` p50 ÷ best one-statement pgbench p50 (4 conns)",
                Target::Info,
                4,
                &|s, r| self.p50(s, Path::Default, r) / self.floor_p50(s, r),
            ),
            both(
                "`crate/query_builder` tps ÷ best one-statement pgbench tps (4 conns)",
                Target::Info,
                4,
                &|s, r| self.tps(s, Path::QueryBuilder, r) / self.best_tps(s, r),
            ),
            both(
                "`crate/query_builder` p50 ÷ `pgbench/explicit_tx` p50, same SQL (1 conn)",
                Target::Info,
                1,
                &|s, r| self.p50(s, Path::QueryBuilder, r) / self.p50(s, Path::ExplicitTx, r),
            ),
            both(
                "`crate/default` p50 ÷ `pgbench/select_1` p50, bare round trip (1 conn)",
                Target::Info,
                1,
                &|s, r| self.p50(s, Path::Default, r) / self.p50(s, Path::Select1, r),
            ),
        ]
    }

    /// Whether every timing target was met, and how many were checked.
    pub fn targets_met(&self) -> (usize, usize) {
        let mut met = 0;
        let mut checked = 0;
        for (_, target, durable, lazy) in self.ratios() {
            for ratio in [durable, lazy] {
                if let Some(ok) = target.met(&ratio) {
                    checked += 1;
                    met += usize::from(ok);
                }
            }
        }
        (met, checked)
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from("## Main scenarios (1000 machines, no delay)\n\n");
        let _ = writeln!(
            out,
            "Ratios: latencies are p50s over the transactions of all interleaved rounds, \
             throughputs medians over rounds; in brackets, the range of the ratio within \
             single rounds.\n"
        );
        let _ = writeln!(
            out,
            "| ratio | durable | `synchronous_commit=off` | target | met |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for (what, target, durable, lazy) in self.ratios() {
            let word = |ok: Option<bool>| match ok {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            };
            let met = match target {
                Target::Info => "(info)".to_owned(),
                _ => format!(
                    "{} / {}",
                    word(target.met(&durable)),
                    word(target.met(&lazy))
                ),
            };
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} | {met} |",
                durable.cell(),
                lazy.cell(),
                target.describe()
            );
        }
        let (met, checked) = self.targets_met();
        let _ = writeln!(out, "\nTiming targets met: {met} of {checked}.\n");

        let _ = writeln!(
            out,
            "Per path (latency over all rounds; throughput and the server's view, from \
             `pg_stat_statements`, per transition, medians over rounds):\n"
        );
        let _ = writeln!(
            out,
            "| scenario | path | p50 ms | p99 ms | tps | statements | plans | server exec µs \
             | server plan µs |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for (s, plan) in self.plans.iter().enumerate() {
            for path in Path::ALL {
                let runs = self.runs(s, path);
                if runs.is_empty() {
                    continue;
                }
                let of = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(f).collect());
                let pooled = sorted(
                    runs.iter()
                        .flat_map(|run| run.measured.latencies_us.iter().copied())
                        .collect(),
                );
                let _ = writeln!(
                    out,
                    "| {} | `{}` | {:.3} | {:.3} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} |",
                    plan.label(),
                    path.label(),
                    quantile(&pooled, 0.5) / 1000.0,
                    quantile(&pooled, 0.99) / 1000.0,
                    of(&|r| r.measured.tps),
                    of(&|r| r.statements_per_tx),
                    of(&|r| r.plans_per_tx),
                    of(&|r| r.exec_us_per_tx),
                    of(&|r| r.plan_us_per_tx),
                );
            }
        }

        let _ = writeln!(
            out,
            "\n`statements` counts what the server executed per transition, one round trip \
             each; pgbench's prepared `BEGIN` and `COMMIT` are not counted by \
             `pg_stat_statements` (diesel's, sent as simple queries, are). `plans` is 0 when \
             a prepared statement reuses its plan."
        );
        out
    }

    /// The latency distribution (CDF, log scale) of every path with one
    /// connection, durable and `synchronous_commit=off` side by side.
    pub fn svg(&self) -> String {
        const PANEL_W: f64 = 520.0;
        const PANEL_H: f64 = 330.0;
        const LEFT: f64 = 60.0;
        const TOP: f64 = 50.0;
        const GAP: f64 = 60.0;
        let panels: Vec<usize> = [self.scenario(1, true), self.scenario(1, false)]
            .into_iter()
            .flatten()
            .collect();
        let curves: Vec<Vec<(Path, Vec<f64>)>> = panels
            .iter()
            .map(|&s| {
                Path::ALL
                    .iter()
                    .filter(|p| !self.runs(s, **p).is_empty())
                    .map(|&p| {
                        let all = self
                            .runs(s, p)
                            .iter()
                            .flat_map(|r| r.measured.latencies_us.iter().map(|us| us / 1000.0))
                            .collect();
                        (p, sorted(all))
                    })
                    .collect()
            })
            .collect();
        let points = curves
            .iter()
            .flatten()
            .flat_map(|(_, v)| [quantile(v, 0.005), quantile(v, 0.995)]);
        let (lo, hi) = points.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
        let (lo, hi) = (lo.max(1e-3).log10().floor(), hi.max(1e-3).log10().ceil());
        let x_of = |ms: f64| (ms.max(1e-3).log10() - lo) / (hi - lo).max(1e-9) * PANEL_W;
        let y_of = |q: f64| PANEL_H * (1.0 - q);

        let width = LEFT + 2.0 * PANEL_W + GAP + 30.0;
        let height = TOP + PANEL_H + 120.0;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            svg,
            r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="22" font-size="15">Transition latency, 1 connection, 1000 machines: share of transitions at or under x (all rounds)</text>"#
        );
        for (i, (scenario, curves)) in panels.iter().zip(&curves).enumerate() {
            let x0 = LEFT + i as f64 * (PANEL_W + GAP);
            let _ = writeln!(svg, r#"<g transform="translate({x0},{TOP})">"#);
            let _ = writeln!(
                svg,
                r##"<rect width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#888"/><text x="0" y="-8" font-size="13">{}</text>"##,
                self.plans[*scenario].label()
            );
            for q in [0.0, 0.25, 0.5, 0.75, 1.0] {
                let y = y_of(q);
                let dash = if q == 0.5 {
                    r#" stroke-dasharray="4 3""#
                } else {
                    ""
                };
                let _ = writeln!(
                    svg,
                    r##"<line x1="0" x2="{PANEL_W}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"{dash}/><text x="-6" y="{:.1}" text-anchor="end">{q}</text>"##,
                    y + 4.0
                );
            }
            let mut decade = lo;
            while decade <= hi {
                for m in [1.0, 2.0, 5.0] {
                    let ms = m * 10f64.powf(decade);
                    let x = x_of(ms);
                    if !(0.0..=PANEL_W + 0.5).contains(&x) {
                        continue;
                    }
                    let _ = writeln!(
                        svg,
                        r##"<line x1="{x:.1}" x2="{x:.1}" y1="0" y2="{PANEL_H}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{ms}</text>"##,
                        PANEL_H + 16.0
                    );
                }
                decade += 1.0;
            }
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">latency, ms (log scale)</text>"#,
                PANEL_W / 2.0,
                PANEL_H + 34.0
            );
            for (path, values) in curves {
                let (color, stroke) = style(*path);
                let line: Vec<String> = (0..=200)
                    .map(|i| {
                        let q = 0.005 + 0.99 * f64::from(i) / 200.0;
                        format!("{:.1},{:.1}", x_of(quantile(values, q)), y_of(q))
                    })
                    .collect();
                let _ = writeln!(
                    svg,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="{stroke}" points="{}"/>"#,
                    line.join(" ")
                );
            }
            let _ = writeln!(svg, "</g>");
        }
        let legend_y = TOP + PANEL_H + 60.0;
        for (i, path) in Path::ALL.iter().enumerate() {
            let (color, stroke) = style(*path);
            let x = LEFT + (i % 4) as f64 * 260.0;
            let y = legend_y + (i / 4) as f64 * 20.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{x}" x2="{:.0}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="{stroke}"/><text x="{:.0}" y="{:.0}">{}</text>"#,
                x + 24.0,
                x + 30.0,
                y + 4.0,
                path.label()
            );
        }
        let _ = writeln!(svg, "</svg>");
        svg
    }
}

/// Colour and stroke width of a path in the plot.
fn style(path: Path) -> (&'static str, f64) {
    match path {
        Path::Select1 => ("#999999", 1.5),
        Path::Function => ("#1f77b4", 2.0),
        Path::Cte => ("#17becf", 2.0),
        Path::ExplicitTx => ("#9467bd", 1.5),
        Path::Legacy => ("#d62728", 2.0),
        Path::Default => ("#000000", 3.0),
        Path::QueryBuilder => ("#ff7f0e", 2.0),
        Path::CrateFunction => ("#2ca02c", 2.0),
    }
}
