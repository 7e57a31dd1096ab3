//! `watch`: the consistency audit on a timer, one line per audit, and the
//! same numbers as Prometheus metrics on `--metrics-addr`.
//!
//! Every audit reads one REPEATABLE READ, read-only snapshot: the pairs
//! (I1–I5), the machines processing for longer than `--stuck-after`,
//! whether the invariants are enforced, and the history rows written since
//! the previous audit. A failed audit (the database is down, say) prints an
//! `audit failed` line and the next interval connects again: `watch` ends only
//! on Ctrl-C or SIGTERM (exit code 0), or after `--count` audits.
//!
//! The database: with `--database-url`, one connection, opened again after
//! any failure. Without one, the embedded server is started for each audit
//! and stopped after it, so that other commands on the same data directory
//! (which take turns through its lock file) wait at most one audit, never
//! for the whole watch.
//!
//! The metrics endpoint is a plain HTTP/1.1 responder on a thread of its
//! own, serving `metrics-exporter-prometheus`'s rendering of the process's
//! recorder on every `GET` path: it needs no async runtime, and it binds the
//! address itself, so that port 0 picks a free port, which is printed.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use chrono::Utc;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::Bool;
use machine_state::audit::AuditReport;
use machine_state::schema::machine_state_transitions;
use machine_state::{Error, telemetry};
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::args::{DatabaseArgs, WatchArgs};
use super::database::{Database, Embedded, Schema};
use super::error::{CliError, Exit, one_line};
use super::output;
use super::{consistency, gauges};

/// The latency buckets of transitions, in seconds: a transition takes about
/// a millisecond; retries and backoff reach into the tenths.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Run `watch` until Ctrl-C, SIGTERM, or `--count` audits.
///
/// # Errors
///
/// The metrics address cannot be bound, or the signal handler cannot be
/// installed ([`CliError::Input`]); audits that fail do not end the command.
pub(crate) fn run(database: &DatabaseArgs, args: &WatchArgs) -> Result<Exit, CliError> {
    let (stop_tx, stop) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .map_err(|e| CliError::Input(format!("cannot handle Ctrl-C: {e}")))?;
    if let Some(addr) = args.metrics_addr {
        let served = serve_metrics(addr)?;
        output::line(format_args!("serving metrics on http://{served}/metrics"))?;
    }
    let mut watcher = Watcher {
        database,
        stuck_after: args.stuck_after,
        counted: 0,
        open: None,
    };
    let mut audits = 0;
    loop {
        let audited = watcher.audit();
        if audited.is_err() && stop.try_recv().is_ok() {
            // Stopped during the audit (a terminal's Ctrl-C reaches the
            // embedded server too): not an outage to report.
            break;
        }
        let line = match audited {
            Ok(line) => {
                counter!(gauges::AUDITS, "result" => "ok").increment(1);
                line
            }
            Err(error) => {
                counter!(gauges::AUDITS, "result" => "error").increment(1);
                format!("audit failed: {}", one_line(&error))
            }
        };
        output::line(format_args!("{}  {line}", output::time(Utc::now())))?;
        audits += 1;
        if args.count.is_some_and(|count| audits >= count) {
            break;
        }
        match stop.recv_timeout(args.interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    watcher.close();
    Ok(Exit::Success)
}

/// Install the Prometheus recorder and answer scrapes on `addr` from a
/// thread of its own; returns the address bound.
fn serve_metrics(addr: SocketAddr) -> Result<SocketAddr, CliError> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| CliError::Input(format!("cannot listen on `{addr}`: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::Input(format!("cannot listen on `{addr}`: {e}")))?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(telemetry::TRANSITION_DURATION.to_owned()),
            DURATION_BUCKETS,
        )
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| CliError::Input(format!("cannot install the metrics recorder: {e}")))?;
    telemetry::describe_metrics();
    gauges::describe();
    thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(error) = answer(stream, &handle) {
                    tracing::debug!(%error, "a metrics scrape failed");
                }
            }
        })
        .map_err(|e| CliError::Input(format!("cannot start the metrics thread: {e}")))?;
    Ok(bound)
}

/// Answer one HTTP request: the metrics for a `GET`, 405 otherwise.
fn answer(stream: TcpStream, handle: &PrometheusHandle) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    // A request line and headers fit in 16 KiB; more is no scrape.
    let mut reader = BufReader::new(stream.try_clone()?.take(16 * 1024));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Read the headers up to the blank line; a scrape has no body.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 0 && header.trim_end() != "" {
        header.clear();
    }
    let (status, body) = if request_line.starts_with("GET ") {
        handle.run_upkeep();
        ("200 OK", handle.render())
    } else {
        ("405 Method Not Allowed", "only GET is served\n".to_owned())
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// The state kept between audits.
struct Watcher<'a> {
    database: &'a DatabaseArgs,
    stuck_after: Duration,
    /// The newest history row counted (0 before the first audit).
    counted: i64,
    /// With `--database-url`: the database and its connection, kept until an
    /// audit fails.
    open: Option<(Database, PgConnection)>,
}

/// What one audit found.
struct Findings {
    report: AuditReport,
    stuck: usize,
    enforced: bool,
}

impl Watcher<'_> {
    /// Audit once, publish the numbers, and describe them on one line.
    fn audit(&mut self) -> Result<String, CliError> {
        let (database, mut conn) = match self.open.take() {
            Some(open) => open,
            None => {
                let database =
                    Database::open(self.database, Schema::Current, Embedded::Persistent)?;
                let conn = database.connect()?;
                (database, conn)
            }
        };
        let findings = self.read(&mut conn);
        if database.is_embedded() {
            // Release the data directory for other commands until the next
            // audit.
            drop(conn);
            database.stop()?;
        } else if findings.is_ok() {
            self.open = Some((database, conn));
        }
        let findings = findings?;
        Ok(self.publish(&findings))
    }

    /// Read everything in one snapshot, counting the history rows added
    /// since the previous audit.
    fn read(&mut self, conn: &mut PgConnection) -> Result<Findings, CliError> {
        let stuck_after = self.stuck_after;
        let counted = self.counted;
        let (findings, recorded) =
            conn.build_transaction()
                .repeatable_read()
                .read_only()
                .run(|conn| {
                    let report = machine_state::audit::audit(conn)?;
                    let stuck = machine_state::audit::stuck(conn, stuck_after)?.len();
                    let enforced =
                        diesel::select(sql::<Bool>("machine_state_invariants_enforced()"))
                            .get_result::<bool>(conn)?;
                    let recorded = recorded_since(conn, counted)?;
                    Ok::<_, Error>((
                        Findings {
                            report,
                            stuck,
                            enforced,
                        },
                        recorded,
                    ))
                })?;
        let (rows, newest) = recorded;
        for (from, to, kind, rows) in rows {
            let from = from.unwrap_or_else(|| "none".to_owned());
            counter!(gauges::RECORDED_TRANSITIONS, "from" => from, "to" => to, "kind" => kind)
                .increment(u64::try_from(rows).unwrap_or(0));
        }
        self.counted = newest;
        Ok(findings)
    }

    /// Set the gauges, and the line.
    fn publish(&self, findings: &Findings) -> String {
        let report = &findings.report;
        gauge!(gauges::MACHINES).set(report.machines as f64);
        gauge!(gauges::DIVERGED).set(report.diverged.len() as f64);
        gauge!(gauges::DIVERGED_RATIO).set(report.diverged_percent() / 100.0);
        gauge!(gauges::STUCK).set(findings.stuck as f64);
        gauge!(gauges::ENFORCED).set(if findings.enforced { 1.0 } else { 0.0 });
        format!(
            "{}; {} stuck in processing for over {}; enforcement {}",
            consistency::summary(report),
            findings.stuck,
            humantime::format_duration(self.stuck_after),
            if findings.enforced { "on" } else { "off" }
        )
    }

    /// Stop the embedded server, if one is still running.
    fn close(self) {
        if let Some((database, conn)) = self.open {
            drop(conn);
            if let Err(error) = database.stop() {
                tracing::warn!(error = %one_line(&error), "could not stop the embedded server");
            }
        }
    }
}

/// A count of history rows: `from` (`None` for a machine's first), `to`,
/// `kind`, rows.
type Recorded = (Option<String>, String, String, i64);

/// The history rows after id `after`, counted by `from`, `to` and `kind`, and
/// the newest id. Pruning (which removes old rows) does not disturb it; a
/// history whose newest id is below `after` (the database was replaced) is
/// counted from its start.
///
/// Not exact under concurrency: ids are taken before commit, so a row that
/// commits after a newer one was counted is missed (a transition committing
/// at the very moment of an audit, or one in a transaction left open across
/// an audit).
fn recorded_since(conn: &mut PgConnection, after: i64) -> Result<(Vec<Recorded>, i64), Error> {
    use machine_state_transitions::dsl as t;
    let newest = t::machine_state_transitions
        .select(diesel::dsl::max(t::id))
        .first::<Option<i64>>(conn)?
        .unwrap_or(0);
    let after = if newest < after { 0 } else { after };
    let rows = t::machine_state_transitions
        .filter(t::id.gt(after).and(t::id.le(newest)))
        .group_by((t::from_state, t::to_state, t::kind))
        .select((
            t::from_state,
            t::to_state,
            t::kind,
            diesel::dsl::count_star(),
        ))
        .load(conn)?;
    Ok((rows, newest))
}
