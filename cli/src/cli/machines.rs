//! The commands on machines: `add`, `show`, `list`, the transitions
//! (`start`, `complete`, `stop`, `fail`, `reset`, `online`, `offline`), and
//! `operation`, which resolves an unknown outcome.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::PgConnection;
use machine_state::audit::Pair;
use machine_state::{Action, AnyMachine, Error, HistoryEntry, Idle, Machine, Offline, State, Verb};
use serde::Serialize;
use uuid::Uuid;

use super::args::InitialState;
use super::error::{CliError, Exit};
use super::output;

/// `add`: register a machine and print its id.
pub(crate) fn add(
    conn: &mut PgConnection,
    id: Option<Uuid>,
    state: InitialState,
) -> Result<Exit, CliError> {
    let id = id.unwrap_or_else(Uuid::new_v4);
    match state {
        InitialState::Offline => Machine::<Offline>::create(conn, id).map(|_| ())?,
        InitialState::Idle => Machine::<Idle>::create(conn, id).map(|_| ())?,
    }
    output::line(id)?;
    Ok(Exit::Success)
}

/// One machine as `show --json` prints it.
#[derive(Serialize)]
struct MachineView<'a> {
    id: Uuid,
    state: State,
    process_id: Option<Uuid>,
    failure_description: Option<&'a str>,
    since: DateTime<Utc>,
    history: Vec<HistoryEntry>,
}

/// `show`: a machine's state, process, failure and history.
pub(crate) fn show(conn: &mut PgConnection, id: Uuid, json: bool) -> Result<Exit, CliError> {
    let machine = AnyMachine::load(conn, id)?;
    let view = MachineView {
        id,
        state: machine.state(),
        process_id: machine.process_id(),
        failure_description: machine.description(),
        since: machine.since(),
        history: machine_state::history::history(conn, id)?,
    };
    if json {
        output::json(&view)?;
        return Ok(Exit::Success);
    }
    output::line(format_args!("machine  {}", view.id))?;
    output::line(format_args!("state    {}", view.state))?;
    if let Some(process) = view.process_id {
        output::line(format_args!("process  {process}"))?;
    }
    if let Some(description) = view.failure_description {
        output::line(format_args!("failure  {description}"))?;
    }
    output::line(format_args!(
        "since    {} ({} ago)",
        output::time(view.since),
        output::ago(view.since)
    ))?;
    output::line("history")?;
    for entry in &view.history {
        let from = entry
            .from_state
            .as_ref()
            .map(machine_state::StoredState::as_str)
            .unwrap_or("(new)");
        let process = entry
            .process_id
            .map(|p| format!(" process {p}"))
            .unwrap_or_default();
        // The verb tells a stop from a completion; entries written before
        // the history kept verbs show their kind.
        let verb = entry.verb.as_deref().unwrap_or(&entry.kind);
        output::line(format_args!(
            "  {}  {verb:<12}  {from} -> {}{process}",
            output::time(entry.transitioned_at),
            entry.to_state,
        ))?;
    }
    Ok(Exit::Success)
}

/// One machine as `list --json` prints it: both rows, and what they break.
#[derive(Serialize)]
struct ListEntry<'a> {
    #[serde(flatten)]
    pair: &'a Pair,
    violations: Vec<machine_state::audit::Violation>,
}

/// `list`: every machine, one line each; diverged ones are flagged.
pub(crate) fn list(conn: &mut PgConnection, json: bool) -> Result<Exit, CliError> {
    let pairs = machine_state::audit::pairs(conn)?;
    if json {
        let entries: Vec<ListEntry<'_>> = pairs
            .iter()
            .map(|pair| ListEntry {
                pair,
                violations: pair.violations(),
            })
            .collect();
        output::json(&entries)?;
        return Ok(Exit::Success);
    }
    if pairs.is_empty() {
        output::line("no machines yet: add one with `machine-state add`")?;
        return Ok(Exit::Success);
    }
    output::line(format_args!(
        "{:<36}  {:<10}  {:<36}  SINCE",
        "ID", "STATE", "PROCESS"
    ))?;
    for pair in &pairs {
        let since = pair
            .state
            .as_ref()
            .map_or(pair.updated_at, |s| s.state_since);
        let flag = if pair.violations().is_empty() {
            ""
        } else {
            "  diverged (see `machine-state audit`)"
        };
        output::line(format_args!(
            "{}  {:<10}  {:<36}  {}{flag}",
            pair.machine_id,
            pair.status,
            output::or_dash(pair.current_process_id),
            output::time(since),
        ))?;
    }
    Ok(Exit::Success)
}

/// A transition command: which machine, what to do, and under which
/// operation id (a new one when `None`).
pub(crate) struct Transition {
    /// The machine.
    pub(crate) id: Uuid,
    /// The transition, with its argument.
    pub(crate) action: Action,
    /// The operation id the caller gave (`--operation-id`), to retry an
    /// unknown outcome.
    pub(crate) operation_id: Option<Uuid>,
}

/// A transition command: load the machine, run the typed transition that
/// the action names, print `id: from -> to`.
///
/// With an operation id that already applied this very transition (a
/// retry after an unknown outcome), nothing is run: it prints what that
/// operation did, `(already applied)`, and succeeds.
///
/// # Errors
///
/// [`CliError::Illegal`] naming the current state when the transition does
/// not exist from it; [`Error::OperationReused`] when the operation id named
/// another transition; the library's errors otherwise (unknown id,
/// inconsistent or unknown state, a concurrent transition, an unknown
/// outcome).
pub(crate) fn transition(
    conn: &mut PgConnection,
    lock_timeout: Duration,
    transition: Transition,
) -> Result<Exit, CliError> {
    let Transition {
        id,
        action,
        operation_id,
    } = transition;
    let operation_id = operation_id.unwrap_or_else(machine_state::new_operation_id);
    if let Some(entry) = machine_state::find_operation(conn, operation_id)? {
        let same = entry.machine_id == id
            && entry
                .verb
                .as_deref()
                .map_or(entry.to_state == action.target().as_str(), |verb| {
                    verb == action.verb().as_str()
                });
        if !same {
            return Err(Error::OperationReused(operation_id).into());
        }
        let from = entry
            .from_state
            .as_ref()
            .map(machine_state::StoredState::as_str)
            .unwrap_or("(new)");
        output::line(format_args!(
            "{id}: {from} -> {}{} (already applied, operation {operation_id})",
            entry.to_state,
            process_note(entry.process_id.filter(|_| entry.to_state == "processing")),
        ))?;
        return Ok(Exit::Success);
    }
    let machine = AnyMachine::load(conn, id)?;
    let from = machine.state();
    let machine = machine
        .with_lock_timeout(lock_timeout)
        .with_operation_id(operation_id)
        .perform(conn, &action)
        .map_err(|refused| match refused.error {
            Error::IllegalTransition {
                machine_id, from, ..
            } => illegal(machine_id, from, &action),
            error => CliError::Library(error),
        })?;
    output::line(format_args!(
        "{id}: {from} -> {}{}",
        machine.state(),
        process_note(machine.process_id())
    ))?;
    Ok(Exit::Success)
}

/// ` (process …)`, or nothing.
fn process_note(process: Option<Uuid>) -> String {
    process
        .map(|p| format!(" (process {p})"))
        .unwrap_or_default()
}

/// `operation`: what an operation did, if it applied; exit code 1 when it
/// did not (it is not in the history).
pub(crate) fn operation(
    conn: &mut PgConnection,
    operation_id: Uuid,
    json: bool,
) -> Result<Exit, CliError> {
    let entry = machine_state::find_operation(conn, operation_id)?;
    if json {
        output::json(&serde_json::json!({
            "operation_id": operation_id,
            "applied": entry.is_some(),
            "entry": entry,
        }))?;
    } else if let Some(entry) = &entry {
        let from = entry
            .from_state
            .as_ref()
            .map(machine_state::StoredState::as_str)
            .unwrap_or("(new)");
        let verb = entry.verb.as_deref().unwrap_or(&entry.kind);
        output::line(format_args!(
            "operation {operation_id} applied: {verb} of machine {}, {from} -> {}{} at {}",
            entry.machine_id,
            entry.to_state,
            process_note(entry.process_id),
            output::time(entry.transitioned_at),
        ))?;
    } else {
        output::line(format_args!(
            "operation {operation_id} did not apply (not in the history)"
        ))?;
    }
    Ok(if entry.is_some() {
        Exit::Success
    } else {
        Exit::Refused
    })
}

/// The refusal of an illegal transition, in words: which state the machine is
/// in, and which states the transition exists from.
fn illegal(machine_id: Uuid, state: State, action: &Action) -> CliError {
    let verb = action.verb();
    let sources: Vec<State> = verb.sources().collect();
    let article = match sources.first() {
        Some(first) if first.as_str().starts_with(['a', 'e', 'i', 'o', 'u']) => "an",
        _ => "a",
    };
    let sources = sources
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(" or ");
    CliError::Illegal {
        machine_id,
        state,
        sources: format!("{article} {sources}"),
        done: done(verb),
    }
}

/// What a transition did, as a participle: "only an `idle` machine can be
/// *started*".
fn done(verb: Verb) -> &'static str {
    match verb {
        Verb::BringOnline => "brought online",
        Verb::TakeOffline => "taken offline",
        Verb::Start => "started",
        Verb::Complete => "completed",
        Verb::Stop => "stopped",
        Verb::Fail => "failed",
        Verb::Reset => "reset",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_illegal_transition_names_the_current_and_the_needed_state() {
        let error = illegal(Uuid::nil(), State::Idle, &Action::Complete);
        assert_eq!(
            error.to_string(),
            "machine `00000000-0000-0000-0000-000000000000` is `idle`: \
             only a `processing` machine can be completed"
        );
        let error = illegal(Uuid::nil(), State::Processing, &Action::TakeOffline);
        assert!(
            error
                .to_string()
                .ends_with("only an `idle` or `error` machine can be taken offline")
        );
    }
}
