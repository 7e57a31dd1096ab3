//! The check after each case: the invariants, the history, the sessions.

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Array, Nullable, Text, Uuid as SqlUuid};
use machine_state::{Action, AnyMachine, State};
use uuid::Uuid;

use super::*;
use crate::support::violations;

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
