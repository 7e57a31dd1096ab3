//! What the write path reports: metrics through the [`metrics`] facade, and
//! one [`tracing`] span per transition.
//!
//! The library only records; the application chooses the exporter (for
//! Prometheus, `metrics-exporter-prometheus`'s `PrometheusBuilder`, as the
//! command line's `watch` does). Without an installed recorder nothing is
//! recorded (the facade's no-op recorder: what remains per transition is
//! building three label sets and a span no subscriber wants, next to a
//! database round trip). Call [`describe_metrics`]
//! once after installing a recorder to give each metric its help text and
//! unit.
//!
//! ```rust,ignore
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//! use machine_state::telemetry;
//!
//! let prometheus = PrometheusBuilder::new()
//!     // Without buckets, this exporter renders histograms as summaries.
//!     .set_buckets_for_metric(
//!         Matcher::Full(telemetry::TRANSITION_DURATION.into()),
//!         &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0],
//!     )?
//!     .install_recorder()?;
//! telemetry::describe_metrics();
//! // ... transitions ...
//! let text = prometheus.render(); // serve it on your scrape endpoint
//! ```
//!
//! # Metrics
//!
//! Labels take a bounded set of values: no machine, process or operation id
//! is ever a label (they are fields of the span instead).
//!
//! | metric | kind | labels | what it counts |
//! |---|---|---|---|
//! | `machine_state_transitions_total` | counter | `from`, `to`, `path`, `outcome` | every transition asked for, once, by how it ended |
//! | `machine_state_transition_duration_seconds` | histogram | `from`, `to`, `path` | the time of a transition through the write path, retries and backoff included |
//! | `machine_state_transition_retries_total` | counter | `from`, `to`, `path`, `reason` | attempts run again after losing a race |
//! | `machine_state_transaction_races_total` | counter | `result` (`retried`, `exhausted`) | lost races of a whole [`transaction()`](crate::transaction()): run again, or given up |
//! | `machine_state_sql_function_fallbacks_total` | counter | `from`, `to` | transitions that asked for the SQL function, found it missing and ran as a statement |
//!
//! Registering a machine and repairing one are not transitions: they are not
//! counted here. (The command line's `watch` adds gauges of its audits, and
//! counts every client's history rows: the README's "Monitoring".)
//!
//! Label values:
//!
//! - `from`, `to`: `offline`, `idle`, `processing`, `error` (`from` is
//!   `none` for a machine's first history row).
//! - `path`: `statement` or `sql_function`, the carrier that produced the
//!   outcome (after a fallback, `statement`).
//! - `reason` (retries): `serialization_failure` (40001) or `deadlock`
//!   (40P01).
//! - `outcome`: `applied` (including a repeat of an operation id that
//!   already applied, which reports the original outcome); the refusals
//!   `conflict`, `illegal`, `not_found`, `inconsistent`, `lock_timeout`
//!   (55P03), `process_in_use`, `operation_reused`, `not_repeatable_read`,
//!   `invalid_input`, `unknown_state`; the failures `unknown_outcome` (the
//!   connection broke in flight: resolve it by operation id),
//!   `retries_exhausted`, `not_migrated`, `connection_lost`, `connection_error`,
//!   `database_error` and `other`. [`outcome_label`] is the mapping. Inside
//!   a caller's transaction a lost race is not retried by the transition but
//!   by the whole transaction: its outcome is `lost_race`, and
//!   `machine_state_transaction_races_total` tells whether
//!   [`transaction()`](crate::transaction()) ran it again or gave up.
//!
//! # Logs
//!
//! One line per transition (target `machine_state::machine`, as the typed
//! API logs it), with the
//! fields `machine_id`, `verb`, `transition`, `operation_id` and `outcome`
//! (the label above): `INFO` "completed machine state transition
//! atomically"; `WARN` "machine state transition not applied" for a refusal
//! or a failure that committed nothing; `WARN` "machine state transition
//! outcome unknown" for `unknown_outcome`, which may have applied: resolve it
//! by its operation id.
//!
//! # Spans
//!
//! Each transition through the write path runs in one span named
//! `machine_state.transition` (target `machine_state::telemetry`, level
//! `INFO`), with the fields `machine_id`, `verb`, `transition` (`idle -> processing`),
//! `operation_id` and `path`, and, recorded when known, `attempts` and
//! `outcome` (a label value above). The write path's own events (a lost race
//! retried, a fallback) are inside it; `tracing-opentelemetry` turns it into
//! an OpenTelemetry span without further code.

use std::time::Instant;

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
use tracing::Span;
use uuid::Uuid;

use crate::error::Error;
use crate::state::{State, Verb};
use crate::write::path::WritePath;

/// Every transition asked for, by `from`, `to`, `path` and `outcome`.
pub const TRANSITIONS_TOTAL: &str = "machine_state_transitions_total";
/// The duration of a transition, in seconds, by `from`, `to` and `path`.
pub const TRANSITION_DURATION: &str = "machine_state_transition_duration_seconds";
/// Attempts run again after a lost race, by `from`, `to`, `path`, `reason`.
pub const RETRIES: &str = "machine_state_transition_retries_total";
/// Lost races of a whole [`transaction()`](crate::transaction()), by
/// `result` (`retried`, `exhausted`).
pub const TRANSACTION_RACES: &str = "machine_state_transaction_races_total";
/// Fallbacks from the SQL function to the statement, by `from` and `to`.
pub const FALLBACKS: &str = "machine_state_sql_function_fallbacks_total";
/// Give every metric of the table above its help text and unit, in the
/// recorder installed now (descriptions given before a recorder is
/// installed are lost).
pub fn describe_metrics() {
    describe_counter!(
        TRANSITIONS_TOTAL,
        "transitions asked for, by how they ended (`outcome`)"
    );
    describe_histogram!(
        TRANSITION_DURATION,
        Unit::Seconds,
        "time of a transition through the write path, retries included"
    );
    describe_counter!(
        RETRIES,
        "transition attempts run again after losing a race (40001, 40P01)"
    );
    describe_counter!(
        TRANSACTION_RACES,
        "lost races of a whole `transaction()`: run again (`retried`) or given up (`exhausted`)"
    );
    describe_counter!(
        FALLBACKS,
        "transitions that found `machine_state_transition` missing and ran as a statement"
    );
}

/// The `outcome` label of a transition that ended with `error` (see the
/// module docs for the values; `applied` is the label of success).
pub fn outcome_label(error: &Error) -> &'static str {
    // One arm per variant and no wildcard: a new variant must choose its
    // label here (a lock timeout, SQLSTATE 55P03, is `lock_timeout`).
    match error {
        Error::Conflict { .. } => "conflict",
        Error::IllegalTransition { .. } => "illegal",
        Error::NotFound(_) => "not_found",
        Error::Inconsistent { .. } => "inconsistent",
        Error::UnknownState { .. } => "unknown_state",
        Error::ProcessInUse(_) => "process_in_use",
        Error::OperationReused(_) => "operation_reused",
        Error::NotRepeatableRead(_) => "not_repeatable_read",
        Error::InvalidInput(_) => "invalid_input",
        Error::OutcomeUnknown { .. } => "unknown_outcome",
        Error::ConnectionLost(_) => "connection_lost",
        Error::RetriesExhausted { .. } => "retries_exhausted",
        Error::LockTimeout { .. } => "lock_timeout",
        Error::NotMigrated(_) => "not_migrated",
        Error::Connection(_) | Error::Pool(_) => "connection_error",
        Error::Database(_) => "database_error",
        Error::AlreadyExists(_)
        | Error::Migration(_)
        | Error::MigrationBlocked { .. }
        | Error::Blocked { .. }
        | Error::Server(_) => "other",
    }
}

/// The `path` label.
fn path_label(path: WritePath) -> &'static str {
    match path {
        WritePath::Statement => "statement",
        WritePath::SqlFunction => "sql_function",
    }
}

/// One transition being observed: its span, its clock, and what the write
/// path reported while it ran.
pub(crate) struct Observation {
    span: Span,
    started: Instant,
    from: &'static str,
    to: &'static str,
    path: WritePath,
    attempts: u32,
    in_callers_transaction: bool,
}

impl Observation {
    /// Open the span of a transition from `from` to `to` of `machine_id`.
    pub(crate) fn begin(
        machine_id: Uuid,
        verb: Verb,
        from: State,
        to: State,
        operation_id: Uuid,
        path: WritePath,
    ) -> Observation {
        let span = tracing::info_span!(
            "machine_state.transition",
            %machine_id,
            verb = verb.as_str(),
            transition = %format_args!("{from} -> {to}"),
            %operation_id,
            path = path_label(path),
            attempts = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        Observation {
            span,
            started: Instant::now(),
            from: from.as_str(),
            to: to.as_str(),
            path,
            attempts: 0,
            in_callers_transaction: false,
        }
    }

    /// The transition's span, to run the write path in.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// One more attempt is about to run (inside the caller's transaction,
    /// or not).
    pub(crate) fn attempt(&mut self, in_callers_transaction: bool) {
        self.attempts += 1;
        self.in_callers_transaction = in_callers_transaction;
    }

    /// The last attempt lost a race (`deadlock` or not) and runs again.
    pub(crate) fn retry(&self, deadlock: bool) {
        let reason = if deadlock {
            "deadlock"
        } else {
            "serialization_failure"
        };
        counter!(
            RETRIES,
            "from" => self.from, "to" => self.to, "path" => path_label(self.path),
            "reason" => reason
        )
        .increment(1);
    }

    /// The SQL function is missing: the transition runs as a statement.
    pub(crate) fn fall_back(&mut self) {
        counter!(FALLBACKS, "from" => self.from, "to" => self.to).increment(1);
        self.path = WritePath::Statement;
        self.span.record("path", path_label(self.path));
    }

    /// Record how the transition ended, closing the observation.
    pub(crate) fn finish<T>(self, result: &Result<T, Error>) {
        let outcome = match result {
            Ok(_) => "applied",
            // Not retried here: the caller runs its whole transaction again
            // (`crate::transaction`), or gives up and says so.
            Err(Error::RetriesExhausted { .. }) if self.in_callers_transaction => "lost_race",
            Err(error) => outcome_label(error),
        };
        let path = path_label(self.path);
        self.span.record("attempts", self.attempts);
        self.span.record("outcome", outcome);
        counter!(
            TRANSITIONS_TOTAL,
            "from" => self.from, "to" => self.to, "path" => path, "outcome" => outcome
        )
        .increment(1);
        histogram!(TRANSITION_DURATION, "from" => self.from, "to" => self.to, "path" => path)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// The target of a transition's log line: the typed API's module, whose
/// transitions it reports (`RUST_LOG=machine_state::machine=warn`).
const LOG_TARGET: &str = "machine_state::machine";

/// The log line of a transition's outcome, with the fields `machine_id`,
/// `verb`, `transition`, `operation_id`, `outcome` (a label value, as the
/// counter's) and, unless it applied, `error`:
///
/// - applied: at `INFO`, "completed machine state transition atomically";
/// - [`Error::OutcomeUnknown`]: at `WARN`, "machine state transition outcome
///   unknown": it may have committed or not, and only its operation id
///   (here in the message too) tells which: never "not applied";
/// - any other error: at `WARN`, "machine state transition not applied"
///   (refused, or failed before anything committed).
pub(crate) fn log_outcome<T>(
    machine_id: Uuid,
    verb: Verb,
    from: State,
    to: State,
    operation_id: Uuid,
    result: &Result<T, Error>,
) {
    let transition = format_args!("{from} -> {to}");
    let verb = verb.as_str();
    match result {
        Ok(_) => tracing::info!(
            target: LOG_TARGET, %machine_id, verb, %transition, %operation_id, outcome = "applied",
            "completed machine state transition atomically"
        ),
        Err(error @ Error::OutcomeUnknown { .. }) => tracing::warn!(
            target: LOG_TARGET, %machine_id, verb, %transition, %operation_id, outcome = outcome_label(error), %error,
            "machine state transition outcome unknown: it may have applied; resolve operation \
             `{operation_id}` by its id (`find_operation`), or retry it with the same id \
             (applied at most once)"
        ),
        Err(error) => tracing::warn!(
            target: LOG_TARGET, %machine_id, verb, %transition, %operation_id, outcome = outcome_label(error), %error,
            "machine state transition not applied"
        ),
    }
}

/// Count a transition refused before reaching the write path (an illegal
/// transition named at run time, an invalid description): no span, no
/// duration.
pub(crate) fn refused_early(from: State, to: State, path: WritePath, error: &Error) {
    counter!(
        TRANSITIONS_TOTAL,
        "from" => from.as_str(), "to" => to.as_str(), "path" => path_label(path),
        "outcome" => outcome_label(error)
    )
    .increment(1);
}

/// A whole [`transaction()`](crate::transaction()) lost a race, and runs
/// again (`retried`) or gives up.
pub(crate) fn transaction_race(retried: bool) {
    let result = if retried { "retried" } else { "exhausted" };
    counter!(TRANSACTION_RACES, "result" => result).increment(1);
}
