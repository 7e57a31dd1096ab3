//! Running a case: seeded machines, workers on their sessions, faults.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::Text;
use machine_state::{Action, AnyMachine, Error, Machine, Offline, Pool, PooledConnection, State};
use proptest::test_runner::TestCaseError;
use uuid::Uuid;

use super::*;
use crate::support::TestDb;

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
        let repeatable_read = machine_state::pool::pool_builder()
            .max_size(MAX_WORKERS as u32)
            .build(machine_state::pool::Manager::new(&db.url).unwrap())
            .unwrap();
        let read_committed = Pool::builder()
            .max_size(MAX_WORKERS as u32)
            .min_idle(Some(1))
            .test_on_check_out(false)
            // No startup option: the server's default isolation.
            .build(
                machine_state::pool::Manager::new(&db.url)
                    .unwrap()
                    .mode(machine_state::pool::ConnectionMode::TransactionPooler),
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
                State::Errored => {
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
    // A checkout waits at most the pool's 0.6 s; while backends are being
    // killed (and the machine is loaded) a new connection can be killed too:
    // try again, with a short pause, as a service would, before calling it
    // a failure (10 quick tries in a row were all killed once, on a loaded
    // machine).
    for _ in 0..30 {
        *conn = pool.get().map_err(|error| error.to_string());
        if conn.is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
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
