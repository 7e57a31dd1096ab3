//! Failover to a synchronous standby, mid-load, through a libpq multi-host
//! URL (`host=primary,standby`, `target_session_attrs=read-write`): every
//! acknowledged transition is on the new primary, every unknown outcome is
//! resolved by its operation id, and no machine diverges.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::Text;
use machine_state::{Action, AnyMachine, EmbeddedPostgres, Error, Pool, State, find_operation};
use uuid::Uuid;

use crate::support::{idle_machine, violations};

const PATIENCE: Duration = Duration::from_secs(60);

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = Text)]
    value: String,
}

/// Wait until `query` on `conn` returns `expected`.
fn wait_for(conn: &mut PgConnection, query: &str, expected: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = sql_query(query)
            .get_result::<Value>(conn)
            .optional()
            .unwrap();
        if found.as_ref().map(|v| v.value.as_str()) == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{query}` never gave `{expected}`"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// What a worker was told about one transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    Acknowledged,
    Unknown,
    Refused,
}

/// Transitions of `id` until `stop`, each under a fresh operation id.
fn keep_transitioning(
    pool: &Pool,
    id: Uuid,
    acks: &AtomicUsize,
    stop: &AtomicBool,
) -> Vec<(Uuid, Told)> {
    let mut told = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut conn) = pool.get() else {
            continue; // no server to reach yet: nothing was sent
        };
        let Ok(machine) = AnyMachine::load(&mut conn, id) else {
            continue;
        };
        let action = match machine.state() {
            State::Processing => Action::Complete,
            _ => Action::Start(Uuid::new_v4()),
        };
        let operation = Uuid::new_v4();
        match machine
            .with_operation_id(operation)
            .perform(&mut conn, &action)
        {
            Ok(_) => {
                acks.fetch_add(1, Ordering::SeqCst);
                told.push((operation, Told::Acknowledged));
            }
            Err(refused) => match refused.error {
                Error::OutcomeUnknown { .. } => told.push((operation, Told::Unknown)),
                Error::Conflict { .. } | Error::RetriesExhausted { .. } => {
                    told.push((operation, Told::Refused));
                }
                // The server went away before the statement was sent, or
                // refused it as read-only: not applied.
                Error::Database(_) => told.push((operation, Told::Refused)),
                other => panic!("an untyped failure: {other:?}"),
            },
        }
    }
    told
}

fn wait_for_acks(acks: &AtomicUsize, at_least: usize) {
    let deadline = Instant::now() + PATIENCE;
    while acks.load(Ordering::SeqCst) < at_least {
        assert!(
            Instant::now() < deadline,
            "the load stalled at {acks:?} acks"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_failover_to_a_synchronous_standby_mid_load_keeps_every_acknowledged_transition() {
    let primary = EmbeddedPostgres::builder().durable(true).start().unwrap();
    let admin = &mut PgConnection::establish(&primary.url("postgres")).unwrap();
    machine_state::run_migrations(admin).unwrap();
    let machines: Vec<Uuid> = (0..2).map(|_| idle_machine(admin)).collect();
    let standby = EmbeddedPostgres::builder()
        .durable(true)
        .standby_of(&primary)
        .start()
        .unwrap();
    admin
        .batch_execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_for(
        admin,
        "SELECT sync_state AS value FROM pg_stat_replication",
        "sync",
    );
    let url = format!(
        "postgresql://postgres@/postgres?host={},{}&port=5432,5432&target_session_attrs=read-write",
        primary.socket_dir().display(),
        standby.socket_dir().display()
    );
    let pool = machine_state::pool::pool_builder()
        .max_size(4)
        .build(machine_state::pool::Manager::new(&url).unwrap())
        .unwrap();
    let (acks, stop) = (AtomicUsize::new(0), AtomicBool::new(false));
    let told: Mutex<Vec<(Uuid, Told)>> = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for worker in 0..4 {
            let (pool, acks, stop, told) = (&pool, &acks, &stop, &told);
            let id = machines[worker % machines.len()];
            scope.spawn(move || {
                let outcomes = keep_transitioning(pool, id, acks, stop);
                told.lock().unwrap().extend(outcomes);
            });
        }
        wait_for_acks(&acks, 40);
        primary.stop_immediately().unwrap();
        let failed_at = acks.load(Ordering::SeqCst);
        standby.promote().unwrap();
        wait_for_acks(&acks, failed_at + 40);
        stop.store(true, Ordering::SeqCst);
    });
    drop(pool);

    // On the new primary: every acknowledged transition, each unknown one
    // resolved (committed or not), no refused one.
    let new_primary = &mut PgConnection::establish(&standby.url("postgres")).unwrap();
    let mut tally: HashMap<&str, usize> = HashMap::new();
    for (operation, told) in told.into_inner().unwrap() {
        let committed = find_operation(new_primary, operation).unwrap().is_some();
        let kind = match (told, committed) {
            (Told::Acknowledged, true) => "acknowledged",
            (Told::Acknowledged, false) => panic!("acknowledged operation {operation} was lost"),
            (Told::Unknown, true) => "unknown, committed",
            (Told::Unknown, false) => "unknown, not committed",
            (Told::Refused, false) => "refused",
            (Told::Refused, true) => panic!("refused operation {operation} was written"),
        };
        *tally.entry(kind).or_default() += 1;
    }
    eprintln!("failover under load: {tally:?}");
    let diverged: Vec<String> = machines
        .iter()
        .flat_map(|&id| violations(new_primary, id))
        .collect();
    assert!(diverged.is_empty(), "{}", diverged.join("\n"));
    standby.stop().unwrap();
    primary.stop().unwrap();
}
