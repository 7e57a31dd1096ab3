//! The concurrency harness: random schedules of workers running transitions
//! against the real server, every outcome recorded client-side, and one check
//! after each case of everything the database must then hold.
//!
//! The same harness runs the crate's write path ([`CrateWriter`]) and the
//! legacy two-write pattern ([`LegacyWriter`](super::legacy_writer::LegacyWriter)):
//! the first must always pass the check, the second must be caught.
//!
//! Replaying: a failing property prints its seed; `PROPTEST_RNG_SEED=<seed>`
//! regenerates the same schedules (the interleaving of the workers is up to
//! the machine, so a race may need a few runs to show again).
//! `MACHINE_STATE_PROPTEST_CASES=<n>` scales every property up for a soak run.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::Duration;

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_query;
use diesel::sql_types::{Array, Nullable, Text, Uuid as SqlUuid};
use machine_state::{
    Action, AnyMachine, Error, Machine, Offline, Pool, PooledConnection, RetryPolicy, State,
    TransitionError,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use uuid::Uuid;

use super::{TestDb, violations};

/// The most workers a schedule has; each holds one pool connection.
pub(crate) const MAX_WORKERS: usize = 8;

/// The environment variable that sets the number of cases of every property.
pub(crate) const CASES_VAR: &str = "MACHINE_STATE_PROPTEST_CASES";

// ---------------------------------------------------------------------------
// Schedules

/// One thing a worker does, as generated.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Re-read the machine through `AnyMachine::load` (refreshes the worker's
    /// copy; every other op acts on the copy, which may be stale).
    Load,
    /// `bring_online`.
    BringOnline,
    /// `take_offline`.
    TakeOffline,
    /// `start` with a fresh process id.
    Start,
    /// `complete`.
    Complete,
    /// `stop`.
    Stop,
    /// `fail` with this description (blank ones are refused as invalid).
    Fail(String),
    /// `reset`.
    Reset,
}

impl Op {
    /// The action this op runs (a fresh process id for `Start`); `None` for a
    /// load.
    fn action(&self) -> Option<Action> {
        Some(match self {
            Op::Load => return None,
            Op::BringOnline => Action::BringOnline,
            Op::TakeOffline => Action::TakeOffline,
            Op::Start => Action::Start(Uuid::new_v4()),
            Op::Complete => Action::Complete,
            Op::Stop => Action::Stop,
            Op::Fail(description) => Action::Fail(description.clone()),
            Op::Reset => Action::Reset,
        })
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Load => f.write_str("load"),
            Op::BringOnline => f.write_str("bring_online"),
            Op::TakeOffline => f.write_str("take_offline"),
            Op::Start => f.write_str("start"),
            Op::Complete => f.write_str("complete"),
            Op::Stop => f.write_str("stop"),
            Op::Fail(description) => write!(f, "fail({description:?})"),
            Op::Reset => f.write_str("reset"),
        }
    }
}

/// One step of a worker: an op on machine number `machine`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Step {
    /// Index into [`Schedule::initial`].
    pub(crate) machine: usize,
    /// What to do.
    pub(crate) op: Op,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{} {:?}", self.machine, self.op)
    }
}

/// The session the workers' pool connections default to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Session {
    /// The crate's pool: REPEATABLE READ by default, a transition is one
    /// autocommit statement.
    RepeatableRead,
    /// A plain r2d2 pool: READ COMMITTED by default, so the write path falls
    /// back to an explicit `BEGIN ISOLATION LEVEL REPEATABLE READ`.
    ReadCommitted,
}

/// A generated case: machines in their initial states, and what each worker
/// does, all workers released together.
#[derive(Clone)]
pub(crate) struct Schedule {
    /// Which kind of pool the workers take their connections from.
    pub(crate) session: Session,
    /// The state each machine starts in.
    pub(crate) initial: Vec<State>,
    /// The steps of each worker.
    pub(crate) workers: Vec<Vec<Step>>,
}

impl Schedule {
    fn ops(&self) -> usize {
        self.workers.iter().map(Vec::len).sum()
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Schedule ({:?} sessions, {} machines {:?}, {} workers, {} ops):",
            self.session,
            self.initial.len(),
            self.initial,
            self.workers.len(),
            self.ops()
        )?;
        for (worker, steps) in self.workers.iter().enumerate() {
            writeln!(f, "  worker {worker}: {steps:?}")?;
        }
        Ok(())
    }
}

/// Any op, weighted so that most of them are legal from some state and
/// every transition of the table is exercised.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Load),
        2 => Just(Op::BringOnline),
        2 => Just(Op::TakeOffline),
        3 => Just(Op::Start),
        3 => Just(Op::Complete),
        2 => Just(Op::Stop),
        2 => "[a-z]{1,8}( [a-z]{1,8})?".prop_map(Op::Fail),
        1 => Just(Op::Fail("  ".into())),
        2 => Just(Op::Reset),
    ]
}

fn initial_state() -> impl Strategy<Value = State> {
    prop_oneof![
        Just(State::Offline),
        Just(State::Idle),
        Just(State::Processing),
        Just(State::Error),
    ]
}

/// `workers` workers (2–8 by default) with 1–12 steps each over `machines`
/// machines (1–8), machine 0 being the hottest, so most cases contend.
pub(crate) fn schedules_with(
    machines: std::ops::RangeInclusive<usize>,
    workers: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = Schedule> {
    (machines, workers)
        .prop_flat_map(|(machines, workers)| {
            let machine = prop_oneof![2 => Just(0), 3 => 0..machines];
            let step = (machine, op()).prop_map(|(machine, op)| Step { machine, op });
            let session = prop_oneof![Just(Session::RepeatableRead), Just(Session::ReadCommitted)];
            (
                session,
                vec(initial_state(), machines),
                vec(vec(step, 1..=24), workers),
            )
        })
        .prop_map(|(session, initial, workers)| Schedule {
            session,
            initial,
            workers,
        })
}

/// The default schedules: 1–8 machines, 2–8 workers.
pub(crate) fn schedules() -> impl Strategy<Value = Schedule> {
    schedules_with(1..=8, 2..=MAX_WORKERS)
}

// ---------------------------------------------------------------------------
// Writers

/// What became of one step, as the worker saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A load that returned a machine.
    Loaded,
    /// A load whose connection broke (only under injected faults).
    LoadLost,
    /// A load through `AnyMachine` found the two rows disagreeing.
    Diverged,
    /// The transition was acknowledged.
    Applied,
    /// The transition was refused with a typed error and must have written
    /// nothing.
    Refused(Refusal),
    /// The connection broke: it applied at most once.
    Unknown,
    /// Anything else (an untyped error, say): the case fails.
    Failed(String),
}

/// The typed refusals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `Error::Conflict`: the machine moved on.
    Conflict,
    /// `Error::IllegalTransition`: not a transition of the worker's copy.
    Illegal,
    /// `Error::InvalidInput`: a blank failure description.
    InvalidInput,
    /// `Error::RetriesExhausted`: every attempt lost a race.
    RetriesExhausted,
}

/// Runs a worker's ops: the crate, or the legacy pattern.
pub(crate) trait Writer: Sync {
    /// The worker's copy of a machine.
    type View: Send;

    /// Read a machine the way this writer's code does before it acts.
    fn load(&self, conn: &mut PgConnection, id: Uuid) -> Result<Self::View, Error>;

    /// The worker's copy made from a machine loaded through `AnyMachine`.
    fn adopt(&self, machine: AnyMachine) -> Self::View;

    /// Run `action` on the machine as the worker's copy `view` has it, under
    /// `operation_id`; returns the outcome and the worker's next copy (`None`:
    /// read it again before the next op).
    fn perform(
        &self,
        conn: &mut PgConnection,
        view: Self::View,
        action: &Action,
        operation_id: Uuid,
    ) -> (Outcome, Option<Self::View>);
}

/// The crate's typed API, through `AnyMachine::perform`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CrateWriter {
    /// The retry policy of every transition.
    pub(crate) retry: RetryPolicy,
}

impl Writer for CrateWriter {
    type View = AnyMachine;

    fn load(&self, conn: &mut PgConnection, id: Uuid) -> Result<AnyMachine, Error> {
        AnyMachine::load(conn, id)
    }

    fn adopt(&self, machine: AnyMachine) -> AnyMachine {
        machine
    }

    fn perform(
        &self,
        conn: &mut PgConnection,
        view: AnyMachine,
        action: &Action,
        operation_id: Uuid,
    ) -> (Outcome, Option<AnyMachine>) {
        let result = view
            .with_retry_policy(self.retry)
            .with_operation_id(operation_id)
            .perform(conn, action);
        match result {
            Ok(next) => (Outcome::Applied, Some(next)),
            Err(TransitionError { machine, error }) => match error {
                Error::Conflict { .. } => (Outcome::Refused(Refusal::Conflict), None),
                Error::IllegalTransition { .. } => {
                    (Outcome::Refused(Refusal::Illegal), Some(machine))
                }
                Error::InvalidInput(_) => (Outcome::Refused(Refusal::InvalidInput), Some(machine)),
                Error::RetriesExhausted { .. } => {
                    (Outcome::Refused(Refusal::RetriesExhausted), None)
                }
                Error::OutcomeUnknown {
                    operation_id: reported,
                    ..
                } if reported == operation_id => (Outcome::Unknown, None),
                error => (Outcome::Failed(describe(&error)), None),
            },
        }
    }
}

/// An error with its chain of sources, for failure messages.
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Whether a crate error says the connection broke.
pub(crate) fn is_connection_lost(error: &Error) -> bool {
    match error {
        Error::OutcomeUnknown { .. } => true,
        Error::Database(error) => diesel_connection_lost(error),
        _ => false,
    }
}

/// Whether a diesel error says the connection broke (libpq's own "server
/// closed the connection unexpectedly" may come with kind `Unknown`).
pub(crate) fn diesel_connection_lost(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        )
        | DieselError::BrokenTransactionManager => true,
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) => info
            .message()
            .starts_with("server closed the connection unexpectedly"),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Running a case

/// Faults injected while the workers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Chaos {
    /// None: every connection must survive.
    None,
    /// Another session terminates random active backends of the database
    /// (mid-statement, mid-transaction) until the workers are done.
    KillBackends,
}

/// One step's record.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    /// The worker.
    pub(crate) worker: usize,
    /// Index of the machine in the schedule.
    pub(crate) machine: usize,
    /// The action run (`None` for a load).
    pub(crate) action: Option<Action>,
    /// The operation id it ran under.
    pub(crate) operation_id: Option<Uuid>,
    /// What came of it.
    pub(crate) outcome: Outcome,
}

/// A database for a whole property: both kinds of pool, machines made fresh
/// for every case.
pub(crate) struct HarnessDb {
    /// The database.
    pub(crate) db: TestDb,
    repeatable_read: Pool,
    read_committed: Pool,
}

impl HarnessDb {
    /// A fresh migrated database and its two pools.
    pub(crate) fn new() -> HarnessDb {
        let db = TestDb::new();
        let repeatable_read = machine_state::pool_builder()
            .max_size(MAX_WORKERS as u32)
            .build(machine_state::Manager::new(&db.url).unwrap())
            .unwrap();
        let read_committed = Pool::builder()
            .max_size(MAX_WORKERS as u32)
            .min_idle(Some(1))
            .test_on_check_out(false)
            // No startup option: the server's default isolation.
            .build(
                machine_state::Manager::new(&db.url)
                    .unwrap()
                    .mode(machine_state::ConnectionMode::TransactionPooler),
            )
            .unwrap();
        HarnessDb {
            db,
            repeatable_read,
            read_committed,
        }
    }

    /// `db` reached through other pools: the REPEATABLE READ one and the
    /// READ COMMITTED one (through a transaction-mode pooler, say).
    pub(crate) fn with_pools(db: TestDb, repeatable_read: Pool, read_committed: Pool) -> HarnessDb {
        HarnessDb {
            db,
            repeatable_read,
            read_committed,
        }
    }

    fn pool(&self, session: Session) -> &Pool {
        match session {
            Session::RepeatableRead => &self.repeatable_read,
            Session::ReadCommitted => &self.read_committed,
        }
    }
}

/// What a case did, and what the check found.
#[derive(Debug, Default)]
pub(crate) struct CaseReport {
    /// Every broken promise; empty when the case passed.
    pub(crate) violations: Vec<String>,
    /// Machines in the case.
    pub(crate) machines: usize,
    /// Machines whose two rows disagreed (I1 or I2 broken, or a row
    /// missing) when a worker loaded them or at the end.
    pub(crate) diverged: usize,
    /// How many steps ended how.
    pub(crate) outcomes: HashMap<String, usize>,
}

impl CaseReport {
    /// A property-test result, with the outcomes for context.
    pub(crate) fn into_result(self) -> Result<(), TestCaseError> {
        if self.violations.is_empty() {
            return Ok(());
        }
        Err(TestCaseError::fail(format!(
            "{} violation(s); outcomes {:?}; diverged machines {}/{}:\n{}",
            self.violations.len(),
            self.outcomes,
            self.diverged,
            self.machines,
            self.violations.join("\n")
        )))
    }
}

/// Run one schedule with `writer` on `db`, injecting `chaos`, then check.
pub(crate) fn run_case<W: Writer>(
    db: &HarnessDb,
    writer: &W,
    chaos: Chaos,
    schedule: &Schedule,
) -> CaseReport {
    let admin = &mut db.db.conn();
    let (machines, setup_ops) = seed_machines(admin, &schedule.initial);
    let (records, kills) = run_workers(db, writer, chaos, schedule, &machines);
    let mut report = check(admin, &db.db.name, &machines, &setup_ops, &records, chaos);
    if chaos == Chaos::KillBackends {
        // Each killed backend is one dead connection, which fails the one
        // step that meets it (or the sweep below); then the pool must
        // discard it.
        let pool = db.pool(schedule.session);
        let swept = sweep(pool);
        let lost = swept
            + records
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::Unknown | Outcome::LoadLost))
                .count();
        if lost > kills {
            report.violations.push(format!(
                "{lost} steps met a dead connection, but only {kills} backends were killed: \
                 the pool handed a dead connection out again"
            ));
        }
        if sweep(pool) > 0 {
            report
                .violations
                .push("the pool still hands out dead connections".into());
        }
        report.outcomes.insert("(backends killed)".into(), kills);
    }
    report
}

/// Check out every connection the pool can hold at once and use each for a
/// read; returns how many were dead (a read on a dead connection makes the
/// pool discard it).
pub(crate) fn sweep(pool: &Pool) -> usize {
    let held: Vec<_> = (0..pool.max_size()).map(|_| pool.get().unwrap()).collect();
    held.into_iter()
        .filter_map(|mut conn| machine_state::find_operation(&mut conn, Uuid::nil()).err())
        .inspect(|error| assert!(is_connection_lost(error), "{}", describe(error)))
        .count()
}

/// Register the machines and bring each to its initial state through the
/// crate; returns their ids and the operation ids of this setup.
fn seed_machines(conn: &mut PgConnection, initial: &[State]) -> (Vec<Uuid>, HashSet<Uuid>) {
    let mut setup = HashSet::new();
    let mut op = || {
        let id = Uuid::new_v4();
        setup.insert(id);
        id
    };
    let ids = initial
        .iter()
        .map(|state| {
            let offline = Machine::<Offline>::create(conn, Uuid::new_v4()).unwrap();
            let id = offline.id();
            match state {
                State::Offline => {}
                State::Idle => {
                    offline.with_operation_id(op()).bring_online(conn).unwrap();
                }
                State::Processing => {
                    offline
                        .with_operation_id(op())
                        .start(conn, Uuid::new_v4())
                        .unwrap();
                }
                State::Error => {
                    offline
                        .with_operation_id(op())
                        .start(conn, Uuid::new_v4())
                        .unwrap()
                        .with_operation_id(op())
                        .fail(conn, "seeded failure")
                        .unwrap();
                }
            }
            id
        })
        .collect();
    (ids, setup)
}

fn run_workers<W: Writer>(
    db: &HarnessDb,
    writer: &W,
    chaos: Chaos,
    schedule: &Schedule,
    machines: &[Uuid],
) -> (Vec<Record>, usize) {
    let pool = db.pool(schedule.session);
    let barrier = Barrier::new(schedule.workers.len());
    let records = Mutex::new(Vec::with_capacity(schedule.ops()));
    let done = AtomicBool::new(false);
    let kills = thread::scope(|scope| {
        let killer = (chaos == Chaos::KillBackends)
            .then(|| scope.spawn(|| kill_backends_until(&db.db, &done)));
        let workers: Vec<_> = schedule
            .workers
            .iter()
            .enumerate()
            .map(|(worker, steps)| {
                let (barrier, records) = (&barrier, &records);
                scope.spawn(move || {
                    let mine = run_worker(pool, writer, barrier, worker, steps, machines);
                    records.lock().unwrap().extend(mine);
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        killer.map_or(0, |killer| killer.join().unwrap())
    });
    (records.into_inner().unwrap(), kills)
}

/// One worker: take a connection, wait for the others, run the steps.
fn run_worker<W: Writer>(
    pool: &Pool,
    writer: &W,
    barrier: &Barrier,
    worker: usize,
    steps: &[Step],
    machines: &[Uuid],
) -> Vec<Record> {
    let mut records = Vec::with_capacity(steps.len());
    let mut conn = pool.get().map_err(|error| error.to_string());
    barrier.wait();
    let mut views: HashMap<usize, W::View> = HashMap::new();
    for step in steps {
        let mut record = |action: Option<Action>, operation_id, outcome| {
            records.push(Record {
                worker,
                machine: step.machine,
                action,
                operation_id,
                outcome,
            });
        };
        let c = match &mut conn {
            Ok(c) => c,
            Err(error) => {
                record(
                    None,
                    None,
                    Outcome::Failed(format!("no connection: {error}")),
                );
                break;
            }
        };
        let id = machines[step.machine];
        let Some(action) = step.op.action() else {
            // A load, through `AnyMachine` whatever the writer: it sees the
            // pair in one snapshot, so it observes a divergence while it lasts.
            let outcome = match AnyMachine::load(c, id) {
                Ok(machine) => {
                    views.insert(step.machine, writer.adopt(machine));
                    Outcome::Loaded
                }
                Err(Error::Inconsistent { .. }) => Outcome::Diverged,
                Err(error) if is_connection_lost(&error) => {
                    reconnect(&mut conn, pool);
                    Outcome::LoadLost
                }
                Err(error) => Outcome::Failed(format!("load: {}", describe(&error))),
            };
            record(None, None, outcome);
            continue;
        };
        let view = match views.remove(&step.machine) {
            Some(view) => view,
            None => match writer.load(c, id) {
                Ok(view) => view,
                Err(error) => {
                    let outcome = if is_connection_lost(&error) {
                        reconnect(&mut conn, pool);
                        Outcome::LoadLost
                    } else {
                        Outcome::Failed(format!("load: {}", describe(&error)))
                    };
                    record(Some(action), None, outcome);
                    continue;
                }
            },
        };
        let operation_id = Uuid::new_v4();
        let (outcome, next) = writer.perform(c, view, &action, operation_id);
        if outcome == Outcome::Unknown {
            reconnect(&mut conn, pool);
        }
        if let Some(next) = next {
            views.insert(step.machine, next);
        }
        record(Some(action), Some(operation_id), outcome);
    }
    records
}

/// Give a broken connection back to the pool (which discards it), then take
/// another.
fn reconnect(conn: &mut Result<PooledConnection, String>, pool: &Pool) {
    drop(std::mem::replace(conn, Err("reconnecting".into())));
    *conn = pool.get().map_err(|error| error.to_string());
}

/// Terminate a random active client backend of the database, again and
/// again, until `done`.
fn kill_backends_until(db: &TestDb, done: &AtomicBool) -> usize {
    let conn = &mut db.conn();
    let mut kills = 0;
    while !done.load(Ordering::SeqCst) {
        // Waits (up to a minute) for the backend to be gone.
        let killed = sql_query(
            "SELECT pg_terminate_backend(pid, 60000) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()
               AND backend_type = 'client backend' AND state <> 'idle'
             ORDER BY random() LIMIT 1",
        )
        .bind::<Text, _>(&db.name)
        .execute(conn)
        .unwrap();
        if killed > 0 {
            kills += killed;
            // Pacing, not synchronisation: let some statements finish
            // between two kills.
            thread::sleep(Duration::from_micros(fastrand::u64(0..=3000)));
        }
    }
    kills
}

// ---------------------------------------------------------------------------
// The check

#[derive(QueryableByName, Debug)]
struct HistoryRow {
    #[diesel(sql_type = SqlUuid)]
    machine_id: Uuid,
    #[diesel(sql_type = Nullable<Text>)]
    from_state: Option<String>,
    #[diesel(sql_type = Text)]
    to_state: String,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    process_id: Option<Uuid>,
    #[diesel(sql_type = SqlUuid)]
    operation_id: Uuid,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    isolation_level: String,
}

#[derive(QueryableByName, Debug)]
struct PairRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    current_process_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    current_state: Option<String>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    process_id: Option<Uuid>,
}

/// Everything the database must hold after a case, by SQL of its own.
pub(crate) fn check(
    conn: &mut PgConnection,
    database: &str,
    machines: &[Uuid],
    setup_ops: &HashSet<Uuid>,
    records: &[Record],
    chaos: Chaos,
) -> CaseReport {
    let mut found = Vec::new();
    let mut outcomes = HashMap::new();
    for record in records {
        let key = match &record.outcome {
            Outcome::Refused(refusal) => Some(format!("{refusal:?}")),
            Outcome::Failed(_) => Some("Failed".to_owned()),
            Outcome::Unknown => None, // counted once resolved, below
            other => Some(format!("{other:?}")),
        };
        if let Some(key) = key {
            *outcomes.entry(key).or_insert(0) += 1;
        }
        match &record.outcome {
            Outcome::Failed(why) => found.push(format!(
                "worker {} on m{}: {:?} failed with an untyped error: {why}",
                record.worker, record.machine, record.action
            )),
            Outcome::Diverged => found.push(format!(
                "worker {} loaded m{} while its two rows disagreed",
                record.worker, record.machine
            )),
            Outcome::Unknown | Outcome::LoadLost if chaos == Chaos::None => found.push(format!(
                "worker {} on m{}: a connection broke with no fault injected",
                record.worker, record.machine
            )),
            _ => {}
        }
    }

    // I1–I6, and every machine loads as a typed machine.
    for (index, &id) in machines.iter().enumerate() {
        for violation in violations(conn, id) {
            found.push(format!("m{index}: {violation}"));
        }
        if let Err(error) = AnyMachine::load(conn, id) {
            found.push(format!("m{index} does not load: {}", describe(&error)));
        }
    }

    // The history against the client's records.
    let rows: Vec<HistoryRow> = sql_query(
        "SELECT machine_id, from_state, to_state, process_id, operation_id, kind, isolation_level
         FROM machine_state_transitions WHERE machine_id = ANY($1) ORDER BY id",
    )
    .bind::<Array<SqlUuid>, _>(machines)
    .load(conn)
    .unwrap();
    let mut written: HashMap<Uuid, Vec<&HistoryRow>> = HashMap::new();
    for row in &rows {
        written.entry(row.operation_id).or_default().push(row);
    }
    let mut recorded = HashSet::new();
    for record in records {
        let (Some(operation_id), Some(action)) = (record.operation_id, &record.action) else {
            continue;
        };
        recorded.insert(operation_id);
        let entries = written.get(&operation_id).map_or(&[][..], Vec::as_slice);
        let what = format!(
            "worker {} on m{}: {action:?} ({operation_id}), {:?},",
            record.worker, record.machine, record.outcome
        );
        match (&record.outcome, entries.len()) {
            (Outcome::Unknown, n @ (0 | 1)) => {
                let resolved = ["Unknown, not committed", "Unknown, committed"][n];
                *outcomes.entry(resolved.to_owned()).or_insert(0) += 1;
            }
            (Outcome::Applied, 1) | (Outcome::Refused(_), 0) => {}
            (_, n) => found.push(format!("{what} is in the history {n} time(s)")),
        }
        if let Some(entry) = entries.first() {
            let machine = machines[record.machine];
            let process = match action {
                Action::Start(process_id) => Some(*process_id),
                _ => entry.process_id,
            };
            if entry.machine_id != machine
                || entry.to_state != action.target().as_str()
                || entry.process_id != process
            {
                found.push(format!("{what} wrote a different transition: {entry:?}"));
            }
        }
    }
    let mut last: HashMap<Uuid, &HistoryRow> = HashMap::new();
    for row in &rows {
        if row.kind == "transition"
            && !setup_ops.contains(&row.operation_id)
            && !recorded.contains(&row.operation_id)
        {
            found.push(format!("a transition nobody asked for: {row:?}"));
        }
        if row.kind == "transition" && row.isolation_level != "repeatable read" {
            found.push(format!(
                "a transition ran under {}: {row:?}",
                row.isolation_level
            ));
        }
        if let Some(previous) = last.get(&row.machine_id) {
            let legal = match (
                row.from_state.as_deref().map(str::parse::<State>),
                row.to_state.parse::<State>(),
            ) {
                (Some(Ok(from)), Ok(to)) => from.can_become(to),
                _ => false,
            };
            if !legal {
                found.push(format!("an illegal transition in the history: {row:?}"));
            }
            // Fencing: leaving `processing` ends the run that entered it.
            if row.from_state.as_deref() == Some("processing")
                && previous.to_state == "processing"
                && row.process_id != previous.process_id
            {
                found.push(format!(
                    "run {:?} was ended by a transition of run {:?}",
                    previous.process_id, row.process_id
                ));
            }
        }
        last.insert(row.machine_id, row);
    }
    // The last entry of each history is what both rows hold, process included.
    let pairs: Vec<PairRow> = sql_query(
        "SELECT m.id, m.status, m.current_process_id, s.current_state, s.process_id
         FROM machines m LEFT JOIN machine_state s ON s.machine_id = m.id
         WHERE m.id = ANY($1)",
    )
    .bind::<Array<SqlUuid>, _>(machines)
    .load(conn)
    .unwrap();
    for pair in &pairs {
        let Some(entry) = last.get(&pair.id) else {
            continue; // reported by `violations`
        };
        let process = (entry.to_state == "processing")
            .then_some(entry.process_id)
            .flatten();
        let from_history = (Some(entry.to_state.as_str()), process);
        if (Some(pair.status.as_str()), pair.current_process_id) != from_history
            || (pair.current_state.as_deref(), pair.process_id) != from_history
        {
            found.push(format!(
                "the history ends in {entry:?}, the rows hold {pair:?}"
            ));
        }
    }

    // Nothing left behind by the sessions.
    found.extend(leftovers(conn, database));

    let mut seen_diverged: HashSet<Uuid> = diverged(conn, machines).into_iter().collect();
    seen_diverged.extend(
        records
            .iter()
            .filter(|r| r.outcome == Outcome::Diverged)
            .map(|r| machines[r.machine]),
    );
    CaseReport {
        violations: found,
        machines: machines.len(),
        diverged: seen_diverged.len(),
        outcomes,
    }
}

/// Sessions of `database` (other than `conn`'s) left idle in a transaction,
/// and locks they hold, described; empty when there are none.
pub(crate) fn leftovers(conn: &mut PgConnection, database: &str) -> Vec<String> {
    sql_query(
        "SELECT format('session %s left %s: %s', pid, state, query) AS what
         FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'
           AND state LIKE 'idle in transaction%'
         UNION ALL
         SELECT format('session %s (%s: %s) holds a %s lock (%s on %s)',
                       l.pid, a.state, a.query, l.mode, l.locktype,
                       coalesce(l.relation::regclass::text, '-'))
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE a.datname = $1 AND l.pid <> pg_backend_pid()
           AND a.backend_type = 'client backend'",
    )
    .bind::<Text, _>(database)
    .load::<What>(conn)
    .unwrap()
    .into_iter()
    .map(|row| row.what)
    .collect()
}

#[derive(QueryableByName)]
struct What {
    #[diesel(sql_type = Text)]
    what: String,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

/// Those of `machines` whose two rows disagree now (or lack one).
pub(crate) fn diverged(conn: &mut PgConnection, machines: &[Uuid]) -> Vec<Uuid> {
    sql_query(
        "SELECT m.id FROM machines m LEFT JOIN machine_state s ON s.machine_id = m.id
         WHERE m.id = ANY($1)
           AND (s.machine_id IS NULL OR m.status IS DISTINCT FROM s.current_state
                OR m.current_process_id IS DISTINCT FROM s.process_id)",
    )
    .bind::<Array<SqlUuid>, _>(machines)
    .load::<Id>(conn)
    .unwrap()
    .into_iter()
    .map(|row| row.id)
    .collect()
}

// ---------------------------------------------------------------------------
// Running properties

/// The number of cases: `MACHINE_STATE_PROPTEST_CASES`, else
/// `PROPTEST_CASES`, else `default`.
pub(crate) fn cases(default: u32) -> u32 {
    for var in [CASES_VAR, "PROPTEST_CASES"] {
        if let Ok(value) = std::env::var(var) {
            return value
                .parse()
                .unwrap_or_else(|_| panic!("{var}={value} is not a number of cases"));
        }
    }
    default
}

/// A runner for `cases` cases with a known seed (`PROPTEST_RNG_SEED`, else
/// a random one), no regression files, and a bounded shrink (every shrink
/// step is a whole case against the database).
pub(crate) fn runner(cases: u32) -> (TestRunner, u64) {
    // `Config::default()` reads the `PROPTEST_*` variables, the seed among them.
    let mut config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 32,
        max_shrink_time: 120_000,
        ..Config::default()
    };
    let seed = match config.rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => fastrand::u64(..),
    };
    config.rng_seed = RngSeed::Fixed(seed);
    (TestRunner::new(config), seed)
}

/// Check `test` on `cases(default_cases)` schedules; on failure, panic with
/// the seed that regenerates them and the smallest failing schedule found.
pub(crate) fn property<S: Strategy>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: fmt::Debug,
{
    let cases = cases(default_cases);
    let (mut runner, seed) = runner(cases);
    eprintln!("{name}: {cases} case(s), seed {seed}");
    match runner.run(&strategy, test) {
        Ok(()) => {}
        Err(TestError::Fail(reason, schedule)) => panic!(
            "{name} failed (seed {seed}: replay with PROPTEST_RNG_SEED={seed})\n\
             {reason}\nsmallest failing case found: {schedule:?}"
        ),
        Err(TestError::Abort(reason)) => {
            panic!("{name} aborted (seed {seed}): {reason}")
        }
    }
}

/// Generate `cases` schedules from `strategy` with the seed of [`runner`],
/// without stopping at a failure (to measure how often something happens).
pub(crate) fn sample<S: Strategy>(cases: u32, strategy: &S) -> (Vec<S::Value>, u64) {
    let (mut runner, seed) = runner(cases);
    let values = (0..cases)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();
    (values, seed)
}
