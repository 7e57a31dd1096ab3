//! The write path's telemetry (`machine_state::telemetry`): its metrics,
//! read back from `metrics-util`'s debugging recorder, and its spans, read
//! back from a `tracing` layer, each installed for one closure on the test's
//! own thread (`metrics::with_local_recorder`,
//! `tracing::subscriber::with_default`), so that tests running in parallel
//! do not see each other's transitions.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::thread;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use machine_state::pool::Manager;
use machine_state::telemetry::{
    FALLBACKS, RETRIES, TRANSACTION_RACES, TRANSITION_DURATION, TRANSITIONS_TOTAL,
};
use machine_state::{Action, AnyMachine, Error, Idle, Machine, Offline, RetryPolicy, WritePath};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use uuid::Uuid;

use crate::faults::{backend_pid, wait_until_blocked};
use crate::support::proxy::{At, Fault, Proxy};
use crate::support::{TestDb, idle_machine, server};

/// One metric as recorded.
struct Metric {
    name: String,
    labels: Vec<(String, String)>,
    value: DebugValue,
}

/// What a closure recorded.
pub(crate) struct Recorded(Vec<Metric>);

/// Run `f` with a recorder of its own, on this thread.
pub(crate) fn recorded<T>(f: impl FnOnce() -> T) -> (T, Recorded) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let value = metrics::with_local_recorder(&recorder, f);
    let metrics = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            Metric {
                name: key.name().to_owned(),
                labels: key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect(),
                value,
            }
        })
        .collect();
    (value, Recorded(metrics))
}

impl Recorded {
    /// The sum of the counters `name` whose labels include `labels`.
    pub(crate) fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(name, labels)
            .map(|value| match value {
                DebugValue::Counter(n) => *n,
                other => panic!("`{name}` is not a counter: {other:?}"),
            })
            .sum()
    }

    /// How many values the histograms `name` whose labels include `labels`
    /// received.
    fn observations(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.matching(name, labels)
            .map(|value| match value {
                DebugValue::Histogram(values) => values.len(),
                other => panic!("`{name}` is not a histogram: {other:?}"),
            })
            .sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a DebugValue> {
        self.0
            .iter()
            .filter(move |metric| {
                metric.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| metric.labels.iter().any(|(hk, hv)| hk == k && hv == v))
            })
            .map(|metric| &metric.value)
    }

    /// Every label value, for the cardinality check.
    fn label_values(&self) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .flat_map(|metric| metric.labels.iter().map(|(_, v)| v.as_str()))
    }
}

fn load_idle(conn: &mut PgConnection, id: Uuid) -> Machine<Idle> {
    match AnyMachine::load(conn, id).unwrap() {
        AnyMachine::Idle(idle) => idle,
        other => panic!("expected an idle machine, got {}", other.state()),
    }
}

#[test]
fn applied_and_refused_transitions_are_counted_by_outcome() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let offline = Machine::<Offline>::create(conn, Uuid::new_v4()).unwrap();
    let id = offline.id();

    // Applied.
    let (idle, m) = recorded(|| offline.bring_online(conn).unwrap());
    let online = [("from", "offline"), ("to", "idle"), ("path", "statement")];
    assert_eq!(
        m.counter(
            TRANSITIONS_TOTAL,
            &[online[0], online[1], online[2], ("outcome", "applied")]
        ),
        1
    );
    assert_eq!(
        m.counter(TRANSITIONS_TOTAL, &[]),
        1,
        "one transition, counted once"
    );
    assert_eq!(m.observations(TRANSITION_DURATION, &online), 1);
    assert_eq!(m.counter(RETRIES, &[]), 0);

    // Conflict: a second start from the same (now stale) idle machine.
    let stale = crate::support::load_as::<machine_state::Idle>(conn, idle.id());
    let processing = idle.start(conn, Uuid::new_v4()).unwrap();
    let (refused, m) = recorded(|| stale.start(conn, Uuid::new_v4()).unwrap_err());
    assert!(
        matches!(refused.error, Error::Conflict { .. }),
        "{refused:?}"
    );
    let start = [("from", "idle"), ("to", "processing")];
    assert_eq!(
        m.counter(
            TRANSITIONS_TOTAL,
            &[start[0], start[1], ("outcome", "conflict")]
        ),
        1
    );
    assert_eq!(m.counter(TRANSITIONS_TOTAL, &[]), 1);
    assert_eq!(m.observations(TRANSITION_DURATION, &start), 1);

    // Illegal, named at run time: counted, never sent.
    let any = AnyMachine::load(conn, id).unwrap();
    let (refused, m) = recorded(|| any.perform(conn, &Action::Reset).unwrap_err());
    assert!(
        matches!(refused.error, Error::IllegalTransition { .. }),
        "{refused:?}"
    );
    let reset = [
        ("from", "processing"),
        ("to", "idle"),
        ("outcome", "illegal"),
    ];
    assert_eq!(m.counter(TRANSITIONS_TOTAL, &reset), 1);
    assert_eq!(m.observations(TRANSITION_DURATION, &[]), 0, "nothing ran");

    // Invalid input: refused before anything is sent.
    let (refused, m) = recorded(|| processing.fail(conn, " ").unwrap_err());
    assert!(
        matches!(refused.error, Error::InvalidInput(_)),
        "{refused:?}"
    );
    let fail = [
        ("from", "processing"),
        ("to", "error"),
        ("outcome", "invalid_input"),
    ];
    assert_eq!(m.counter(TRANSITIONS_TOTAL, &fail), 1);
    let processing = refused.machine;

    // Inconsistent: a legacy half write diverged the pair.
    conn.batch_execute(&format!(
        "UPDATE machines SET status = 'idle' WHERE id = '{id}'"
    ))
    .unwrap();
    let (refused, m) = recorded(|| processing.complete(conn).unwrap_err());
    assert!(
        matches!(refused.error, Error::Inconsistent { .. }),
        "{refused:?}"
    );
    let complete = [
        ("from", "processing"),
        ("to", "idle"),
        ("outcome", "inconsistent"),
    ];
    assert_eq!(m.counter(TRANSITIONS_TOTAL, &complete), 1);

    // Not found: the machine is gone.
    let gone = idle_machine(conn);
    let gone = load_idle(conn, gone);
    conn.batch_execute(&format!("DELETE FROM machines WHERE id = '{}'", gone.id()))
        .unwrap();
    let (refused, m) = recorded(|| gone.take_offline(conn).unwrap_err());
    assert!(matches!(refused.error, Error::NotFound(_)), "{refused:?}");
    let offline = [
        ("from", "idle"),
        ("to", "offline"),
        ("outcome", "not_found"),
    ];
    assert_eq!(m.counter(TRANSITIONS_TOTAL, &offline), 1);

    // Bounded cardinality: no id ever becomes a label.
    for value in m.label_values() {
        assert!(value.parse::<Uuid>().is_err(), "an id as a label: {value}");
    }
}

/// One `idle -> processing` that loses a race to a concurrent update of
/// `machines` (40001), under `policy`, on this thread; the other
/// transaction commits from a thread of its own once the transition waits.
fn lose_a_race(policy: RetryPolicy) -> (Result<(), Error>, Recorded, Vec<SeenSpan>) {
    lose_a_race_in(policy, false)
}

/// [`lose_a_race`], the transition inside [`machine_state::transaction`]
/// when `in_transaction`.
fn lose_a_race_in(
    policy: RetryPolicy,
    in_transaction: bool,
) -> (Result<(), Error>, Recorded, Vec<SeenSpan>) {
    let db = TestDb::new();
    let admin = &mut db.conn();
    let pool = machine_state::pool::pool_builder()
        .max_size(1)
        .build(Manager::new(&db.url).unwrap())
        .unwrap();
    let id = idle_machine(admin);
    let mut conn = pool.get().unwrap();
    let idle = load_idle(&mut conn, id).with_retry_policy(policy);
    let pid = backend_pid(&mut conn);
    let mut other = db.conn();
    other
        .batch_execute(&format!(
            "BEGIN; UPDATE machines SET updated_at = updated_at WHERE id = '{id}'"
        ))
        .unwrap();
    thread::scope(|scope| {
        scope.spawn(move || {
            wait_until_blocked(admin, pid);
            other.batch_execute("COMMIT").unwrap();
        });
        let ((result, recorded), spans) = traced(|| {
            recorded(|| {
                let process = Uuid::new_v4();
                if in_transaction {
                    machine_state::transaction(&mut conn, &policy, |conn| {
                        crate::support::load_as::<machine_state::Idle>(conn, id)
                            .with_retry_policy(policy)
                            .start(conn, process)
                            .map(|_| ())?;
                        Ok(())
                    })
                } else {
                    idle.start(&mut conn, process)
                        .map(|_| ())
                        .map_err(|refused| refused.error)
                }
            })
        });
        (result, recorded, spans)
    })
}

#[test]
fn a_lost_race_is_counted_as_a_retry_and_the_transition_once_as_applied() {
    let (result, m, spans) = lose_a_race(RetryPolicy::default());
    result.unwrap();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(
        spans[0].fields.get("attempts").map(String::as_str),
        Some("2")
    );
    let start = [
        ("from", "idle"),
        ("to", "processing"),
        ("path", "statement"),
    ];
    assert_eq!(
        m.counter(
            RETRIES,
            &[
                start[0],
                start[1],
                start[2],
                ("reason", "serialization_failure")
            ]
        ),
        1
    );
    assert_eq!(
        m.counter(
            TRANSITIONS_TOTAL,
            &[start[0], start[1], ("outcome", "applied")]
        ),
        1
    );
    assert_eq!(m.counter(TRANSITIONS_TOTAL, &[]), 1);
}

#[test]
fn a_lost_race_without_retries_is_counted_as_retries_exhausted() {
    let (result, m, spans) = lose_a_race(RetryPolicy::never());
    assert_eq!(
        spans[0].fields.get("outcome").map(String::as_str),
        Some("retries_exhausted")
    );
    assert!(
        matches!(result, Err(Error::RetriesExhausted { .. })),
        "{result:?}"
    );
    assert_eq!(m.counter(RETRIES, &[]), 0);
    assert_eq!(
        m.counter(TRANSITIONS_TOTAL, &[("outcome", "retries_exhausted")]),
        1
    );
    assert_eq!(m.counter(TRANSITIONS_TOTAL, &[]), 1);
}

#[test]
fn a_lost_race_inside_a_transaction_is_counted_as_lost_and_the_transaction_as_retried() {
    let (result, m, spans) = lose_a_race_in(RetryPolicy::default(), true);
    result.unwrap();
    assert_eq!(
        spans.len(),
        2,
        "one span per run of the transition: {spans:?}"
    );
    assert_eq!(m.counter(TRANSITIONS_TOTAL, &[("outcome", "lost_race")]), 1);
    assert_eq!(m.counter(TRANSITIONS_TOTAL, &[("outcome", "applied")]), 1);
    assert_eq!(
        m.counter(TRANSITIONS_TOTAL, &[("outcome", "retries_exhausted")]),
        0
    );
    assert_eq!(m.counter(TRANSACTION_RACES, &[("result", "retried")]), 1);
    assert_eq!(m.counter(TRANSACTION_RACES, &[("result", "exhausted")]), 0);
    assert_eq!(
        m.counter(RETRIES, &[]),
        0,
        "the transition itself is not retried"
    );

    let (result, m, _) = lose_a_race_in(RetryPolicy::never(), true);
    assert!(
        matches!(result, Err(Error::RetriesExhausted { .. })),
        "{result:?}"
    );
    assert_eq!(m.counter(TRANSITIONS_TOTAL, &[("outcome", "lost_race")]), 1);
    assert_eq!(m.counter(TRANSACTION_RACES, &[("result", "exhausted")]), 1);
}

#[test]
fn a_lost_reply_is_counted_as_an_unknown_outcome() {
    let db = TestDb::new();
    let admin = &mut db.conn();
    let proxy = Proxy::start(server().socket_dir().join(".s.PGSQL.5432"));
    let pool = machine_state::pool::pool_builder()
        .max_size(1)
        .build(Manager::new(&proxy.url(&db.name)).unwrap())
        .unwrap();
    let id = idle_machine(admin);
    let mut conn = pool.get().unwrap();
    let idle = load_idle(&mut conn, id);
    proxy.arm(At::Statement, Fault::LoseReply);
    let (refused, m) = recorded(|| idle.start(&mut conn, Uuid::new_v4()).unwrap_err());
    assert!(proxy.fired(), "the fault was not injected");
    assert!(
        matches!(refused.error, Error::OutcomeUnknown { .. }),
        "{refused:?}"
    );
    let start = [("from", "idle"), ("to", "processing")];
    assert_eq!(
        m.counter(
            TRANSITIONS_TOTAL,
            &[start[0], start[1], ("outcome", "unknown_outcome")]
        ),
        1
    );
    assert_eq!(m.counter(TRANSITIONS_TOTAL, &[]), 1);
}

#[test]
fn a_fallback_from_a_missing_sql_function_is_counted_with_the_path_that_ran() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    conn.batch_execute(
        "DROP FUNCTION atomic_update_machine_state, atomic_complete_machine_state,
             atomic_error_machine_state, atomic_processing_machine_state;
         DROP FUNCTION machine_state_transition;",
    )
    .unwrap();
    let offline = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .with_write_path(WritePath::SqlFunction);
    let (_, m) = recorded(|| offline.bring_online(conn).unwrap());
    assert_eq!(
        m.counter(FALLBACKS, &[("from", "offline"), ("to", "idle")]),
        1
    );
    assert_eq!(
        m.counter(
            TRANSITIONS_TOTAL,
            &[("path", "statement"), ("outcome", "applied")]
        ),
        1
    );
    assert_eq!(m.counter(TRANSITIONS_TOTAL, &[("path", "sql_function")]), 0);

    // With the function in place, the path is the function's.
    let db = TestDb::new();
    let conn = &mut db.conn();
    let offline = Machine::<Offline>::create(conn, Uuid::new_v4())
        .unwrap()
        .with_write_path(WritePath::SqlFunction);
    let (_, m) = recorded(|| offline.bring_online(conn).unwrap());
    assert_eq!(m.counter(FALLBACKS, &[]), 0);
    assert_eq!(
        m.counter(
            TRANSITIONS_TOTAL,
            &[("path", "sql_function"), ("outcome", "applied")]
        ),
        1
    );
}

// ---------------------------------------------------------------------------
// The span of a transition

/// A span as a subscriber saw it: name and fields, as recorded by the time
/// it closed.
#[derive(Clone, Debug)]
struct SeenSpan {
    name: &'static str,
    fields: BTreeMap<String, String>,
}

/// A layer that keeps every span it sees.
#[derive(Clone, Default)]
struct Spans {
    open: Arc<Mutex<HashMap<u64, SeenSpan>>>,
    closed: Arc<Mutex<Vec<SeenSpan>>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let span = SeenSpan {
            name: attrs.metadata().name(),
            fields,
        };
        self.open.lock().unwrap().insert(id.into_u64(), span);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(span) = self.open.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        if let Some(span) = self.open.lock().unwrap().remove(&id.into_u64()) {
            self.closed.lock().unwrap().push(span);
        }
    }
}

/// Run `f` with a subscriber of its own, on this thread; the spans it closed.
fn traced<T>(f: impl FnOnce() -> T) -> (T, Vec<SeenSpan>) {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let value = tracing::subscriber::with_default(subscriber, f);
    let closed = spans.closed.lock().unwrap().clone();
    (value, closed)
}

#[test]
fn each_transition_runs_in_one_span_with_its_ids_attempts_and_outcome() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = idle_machine(conn);
    let idle = load_idle(conn, id);
    let stale = load_idle(conn, id);
    let operation = Uuid::new_v4();
    let (_, spans) = traced(|| {
        idle.with_operation_id(operation)
            .start(conn, Uuid::new_v4())
            .unwrap()
    });
    let [span] = &spans[..] else {
        panic!("one span per transition: {spans:?}");
    };
    assert_eq!(span.name, "machine_state.transition");
    let field = |name: &str| span.fields.get(name).map(String::as_str);
    assert_eq!(field("machine_id"), Some(id.to_string().as_str()));
    assert_eq!(field("operation_id"), Some(operation.to_string().as_str()));
    assert_eq!(field("transition"), Some("idle -> processing"));
    assert_eq!(field("verb"), Some("start"));
    assert_eq!(field("path"), Some("statement"));
    assert_eq!(field("attempts"), Some("1"));
    assert_eq!(field("outcome"), Some("applied"));

    let (_, spans) = traced(|| stale.start(conn, Uuid::new_v4()).unwrap_err());
    let [span] = &spans[..] else {
        panic!("one span per transition: {spans:?}");
    };
    assert_eq!(
        span.fields.get("outcome").map(String::as_str),
        Some("conflict")
    );
}

#[test]
fn a_lock_held_past_the_limit_is_counted_as_a_lock_timeout() {
    let db = TestDb::new();
    let conn = &mut db.conn();
    let id = idle_machine(conn);
    let idle = load_idle(conn, id).with_lock_timeout(std::time::Duration::from_millis(100));
    let holder = &mut db.conn();
    holder
        .batch_execute(&format!(
            "BEGIN; UPDATE machines SET updated_at = updated_at WHERE id = '{id}'"
        ))
        .unwrap();
    let (refused, m) = recorded(|| idle.start(conn, Uuid::new_v4()).unwrap_err());
    holder.batch_execute("ROLLBACK").unwrap();
    assert!(
        matches!(refused.error, Error::LockTimeout { .. }),
        "{refused:?}"
    );
    let start = [("from", "idle"), ("to", "processing")];
    assert_eq!(
        m.counter(
            TRANSITIONS_TOTAL,
            &[start[0], start[1], ("outcome", "lock_timeout")]
        ),
        1
    );
    assert_eq!(m.counter(TRANSITIONS_TOTAL, &[]), 1);
}
