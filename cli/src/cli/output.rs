//! Printing results: text for people, `--json` for scripts and monitoring.

use std::fmt::Display;
use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::error::CliError;

/// Print a line on stdout. A closed pipe (`machine-state list | head`) ends
/// the output quietly.
pub(crate) fn line(text: impl Display) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    quiet_on_closed_pipe(writeln!(out, "{text}"))
}

/// Print a value as pretty JSON on stdout.
pub(crate) fn json(value: &impl Serialize) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    let written = serde_json::to_writer_pretty(&mut out, value)
        .map_err(io::Error::from)
        .and_then(|()| writeln!(out));
    quiet_on_closed_pipe(written)
}

fn quiet_on_closed_pipe(result: io::Result<()>) -> Result<(), CliError> {
    match result {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(CliError::Output),
    }
}

/// A time as RFC 3339 to the second, in UTC (`2026-11-26T10:00:01Z`).
pub(crate) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// How long ago `at` was, to the second (`2h 3m 4s`).
pub(crate) fn ago(at: DateTime<Utc>) -> String {
    let seconds = (Utc::now() - at).num_seconds().max(0);
    humantime::format_duration(std::time::Duration::from_secs(seconds as u64)).to_string()
}

/// An optional value, or `-`.
pub(crate) fn or_dash(value: Option<impl Display>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A share in percent with one decimal (`42.5%`).
pub(crate) fn percent(share: f64) -> String {
    format!("{share:.1}%")
}
