//! What both benches share: the numbering of bench machines, seeding them, and
//! the two reference paths the crate is compared with (a hand-written diesel
//! query-builder transaction, and the legacy two-write pattern).
//!
//! The reference paths are deliberately written the way a diesel user would
//! write them without this crate; they are baselines, not library code.

#![allow(
    dead_code,
    reason = "shared by two bench targets that each use a different subset"
)]

use ::machine_state::testing::legacy;
use ::machine_state::{Idle, Machine};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use uuid::Uuid;

use ::machine_state::schema::{machine_state, machine_state_transitions, machines};

/// The id of bench machine `n` (1-based): the UUID whose 128 bits are `n`,
/// which SQL computes as `lpad(to_hex(n), 32, '0')::uuid`.
pub fn machine_id(n: u32) -> Uuid {
    Uuid::from_u128(u128::from(n))
}

/// The recipe run bench machine `n` processes: `10000000-` followed by `n` in
/// the low 96 bits; SQL: `('10000000' || lpad(to_hex(n), 24, '0'))::uuid`.
pub fn process_id(n: u32) -> Uuid {
    Uuid::from_u128((0x1000_0000_u128 << 96) | u128::from(n))
}

/// Register machines `1..=count` as idle, through the crate's API, in one
/// REPEATABLE READ transaction.
///
/// # Panics
///
/// When the database refuses: a bench cannot go on without its machines.
pub fn seed(conn: &mut PgConnection, count: u32) {
    conn.build_transaction()
        .repeatable_read()
        .run(|conn| {
            for n in 1..=count {
                Machine::<Idle>::create(conn, machine_id(n)).map_err(|e| {
                    diesel::result::Error::QueryBuilderError(format!("seeding: {e}").into())
                })?;
            }
            Ok::<_, diesel::result::Error>(())
        })
        .unwrap_or_else(|e| panic!("cannot seed {count} machines: {e}"));
    conn.batch_execute("VACUUM ANALYZE machines, machine_state, machine_state_transitions")
        .unwrap_or_else(|e| panic!("cannot vacuum after seeding: {e}"));
}

/// One step of the idle/processing cycle every workload runs.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// The machine.
    pub machine: Uuid,
    /// The state it is left from.
    pub from: &'static str,
    /// The run it must be processing (leaving `processing`).
    pub expected: Option<Uuid>,
    /// The state entered.
    pub to: &'static str,
    /// The run it processes afterwards (entering `processing`).
    pub new_process: Option<Uuid>,
}

impl Step {
    /// `idle -> processing` (`start`) of machine `n`.
    pub fn start(n: u32) -> Step {
        Step {
            machine: machine_id(n),
            from: "idle",
            expected: None,
            to: "processing",
            new_process: Some(process_id(n)),
        }
    }

    /// `processing -> idle` (`complete`) of machine `n`.
    pub fn complete(n: u32) -> Step {
        Step {
            machine: machine_id(n),
            from: "processing",
            expected: Some(process_id(n)),
            to: "idle",
            new_process: None,
        }
    }
}

/// Why the query-builder path did not apply a step.
#[derive(Debug)]
pub enum QueryBuilderError {
    /// A guarded update matched no row: the machine was not in `from`.
    Refused,
    /// The database failed.
    Database(diesel::result::Error),
}

impl From<diesel::result::Error> for QueryBuilderError {
    fn from(error: diesel::result::Error) -> Self {
        QueryBuilderError::Database(error)
    }
}

/// The pure diesel query-builder path: a hand-written REPEATABLE READ
/// transaction of two guarded `diesel::update`s and a history insert
/// (`BEGIN`, three statements, `COMMIT`: five round trips).
///
/// diesel 2.3 never prepares an `update()`: `UpdateStatement::walk_ast` calls
/// `unsafe_to_cache_prepared`, so both updates are parsed, analysed and
/// planned on every call (`pg_stat_statements` counts two plans per
/// transition). Wrapping them in a type with a static `QueryId` that
/// overrides `is_safe_to_cache_prepared` does not help: the connection hands
/// the statement cache a `&T`, whose blanket `QueryFragment` impl walks the
/// AST again. Only a hand-written `QueryFragment` (the crate's write path)
/// gets a write prepared once per connection.
///
/// # Errors
///
/// [`QueryBuilderError::Refused`] when a guard fails (nothing is written).
pub fn query_builder_transition(
    conn: &mut PgConnection,
    step: &Step,
) -> Result<(), QueryBuilderError> {
    conn.build_transaction().repeatable_read().run(|conn| {
        let machine_rows = diesel::update(
            machines::table
                .filter(machines::id.eq(step.machine))
                .filter(machines::status.eq(step.from))
                .filter(machines::current_process_id.is_not_distinct_from(step.expected)),
        )
        .set((
            machines::status.eq(step.to),
            machines::current_process_id.eq(step.new_process),
            machines::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)?;
        if machine_rows != 1 {
            return Err(QueryBuilderError::Refused);
        }
        let state_rows = diesel::update(
            machine_state::table
                .filter(machine_state::machine_id.eq(step.machine))
                .filter(machine_state::current_state.eq(step.from))
                .filter(machine_state::process_id.is_not_distinct_from(step.expected)),
        )
        .set((
            machine_state::current_state.eq(step.to),
            machine_state::process_id.eq(step.new_process),
            machine_state::state_since.eq(diesel::dsl::now),
            machine_state::updated_at.eq(diesel::dsl::now),
            machine_state::is_failure_mode.eq(false),
            machine_state::failure_component.eq(None::<String>),
            machine_state::failure_description.eq(None::<String>),
        ))
        .execute(conn)?;
        if state_rows != 1 {
            return Err(QueryBuilderError::Refused);
        }
        // `isolation_level` defaults to `current_setting('transaction_isolation')`.
        diesel::insert_into(machine_state_transitions::table)
            .values((
                machine_state_transitions::machine_id.eq(step.machine),
                machine_state_transitions::from_state.eq(step.from),
                machine_state_transitions::to_state.eq(step.to),
                machine_state_transitions::process_id.eq(step.new_process.or(step.expected)),
                machine_state_transitions::operation_id.eq(Uuid::new_v4()),
                machine_state_transitions::kind.eq("transition"),
                machine_state_transitions::transitioned_at.eq(diesel::dsl::now),
            ))
            .execute(conn)?;
        Ok(())
    })
}

/// The legacy pattern: two autocommit updates, blind and not atomic.
///
/// # Errors
///
/// Database errors, and a `NotFound` when an update matched no row: the
/// legacy pattern checks nothing else.
pub fn legacy_two_write(conn: &mut PgConnection, step: &Step) -> QueryResult<()> {
    let at = chrono::Utc::now();
    let machine_rows = legacy::write_machines(conn, step.machine, step.to, step.new_process, at)?;
    let state_rows =
        legacy::write_machine_state(conn, step.machine, step.to, step.new_process, None, at)?;
    if (machine_rows, state_rows) == (1, 1) {
        Ok(())
    } else {
        Err(diesel::result::Error::NotFound)
    }
}
