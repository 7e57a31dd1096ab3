//! What this crate adds to, or takes from, a libpq connection string.
//!
//! Both libpq forms are understood: a URI (`postgresql://…?key=value&…`) and
//! keyword/value pairs (`host=… dbname=…`).

use super::ConnectionMode;
use crate::error::Error;

/// The URI query parameter that selects a [`ConnectionMode`]; libpq does not
/// know it, so it is taken out before connecting.
pub(super) const POOLER_PARAMETER: &str = "machine_state_pooler";

/// The startup option that makes a session default to REPEATABLE READ, as
/// libpq's `options` wants it (a backslash keeps the space in the value).
const REPEATABLE_READ_OPTION: &str = r"-c default_transaction_isolation=repeatable\ read";

/// libpq's `connect_timeout` (seconds; 2 is its minimum) added when the URL
/// sets none, so that a connection attempt to a host that does not answer
/// ends instead of waiting for TCP's timeout.
const CONNECT_TIMEOUT_SECONDS: &str = "2";

/// Whether `url` is a libpq URI rather than keyword/value pairs.
fn is_uri(url: &str) -> bool {
    url.starts_with("postgresql://") || url.starts_with("postgres://")
}

/// `url` without the pooler switch, and the mode it selected, if any.
///
/// # Errors
///
/// [`Error::InvalidInput`] for an unknown mode.
pub(super) fn take_pooler_switch(url: &str) -> Result<(String, Option<ConnectionMode>), Error> {
    if !is_uri(url) {
        return Ok((url.to_owned(), None));
    }
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut mode = None;
    let mut kept = Vec::new();
    for parameter in query.split('&') {
        match parameter.split_once('=') {
            Some((POOLER_PARAMETER, value)) => mode = Some(value.parse()?),
            _ => kept.push(parameter),
        }
    }
    Ok((join(base, &kept), mode))
}

/// `url` prepared for `mode`: for [`ConnectionMode::Direct`], the
/// REPEATABLE READ startup option merged into its `options` (a URI's
/// `options` is extended; keyword/value pairs that set `options` already are
/// left as they are, and the write path then opens its transactions
/// explicitly); both get a `connect_timeout` unless they set one.
pub(super) fn prepare(url: &str, mode: ConnectionMode) -> String {
    let direct = mode == ConnectionMode::Direct;
    if is_uri(url) {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut parameters: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        if direct {
            let ours = percent_encode(REPEATABLE_READ_OPTION);
            match parameters.iter_mut().find(|p| p.starts_with("options=")) {
                Some(options) => {
                    options.push_str("%20");
                    options.push_str(&ours);
                }
                None => parameters.push(format!("options={ours}")),
            }
        }
        if !parameters.iter().any(|p| p.starts_with("connect_timeout=")) {
            parameters.push(format!("connect_timeout={CONNECT_TIMEOUT_SECONDS}"));
        }
        let parameters: Vec<&str> = parameters.iter().map(String::as_str).collect();
        join(base, &parameters)
    } else {
        let mut prepared = url.trim().to_owned();
        let has = |keyword: &str| {
            url.split_whitespace()
                .any(|pair| pair.split('=').next().map(str::trim) == Some(keyword))
        };
        if direct && !has("options") {
            let quoted = REPEATABLE_READ_OPTION.replace('\\', r"\\");
            prepared.push_str(&format!(" options='{quoted}'"));
        }
        if !has("connect_timeout") {
            prepared.push_str(&format!(" connect_timeout={CONNECT_TIMEOUT_SECONDS}"));
        }
        prepared.trim_start().to_owned()
    }
}

fn join(base: &str, parameters: &[&str]) -> String {
    if parameters.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", parameters.join("&"))
    }
}

/// Percent-encode what a URI query value cannot hold as is.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uri_gets_the_startup_option_and_a_connect_timeout() {
        assert_eq!(
            prepare("postgresql://u@h/db", ConnectionMode::Direct),
            "postgresql://u@h/db?options=-c%20default_transaction_isolation%3Drepeatable%5C%20read\
             &connect_timeout=2"
        );
    }

    #[test]
    fn existing_options_are_extended_and_a_timeout_kept() {
        assert_eq!(
            prepare(
                "postgres:///db?options=-c%20work_mem%3D8MB&connect_timeout=5",
                ConnectionMode::Direct
            ),
            "postgres:///db?options=-c%20work_mem%3D8MB%20-c%20default_transaction_isolation\
             %3Drepeatable%5C%20read&connect_timeout=5"
        );
    }

    #[test]
    fn a_pooler_url_gets_no_startup_option() {
        assert_eq!(
            prepare(
                "postgresql://u@h:6432/db",
                ConnectionMode::TransactionPooler
            ),
            "postgresql://u@h:6432/db?connect_timeout=2"
        );
    }

    #[test]
    fn keyword_value_pairs_are_extended_unless_they_set_options() {
        assert_eq!(
            prepare("host=/tmp dbname=db", ConnectionMode::Direct),
            r"host=/tmp dbname=db options='-c default_transaction_isolation=repeatable\\ read' connect_timeout=2"
        );
        assert_eq!(
            prepare(
                "host=/tmp options='-c a=b' connect_timeout=3",
                ConnectionMode::Direct
            ),
            "host=/tmp options='-c a=b' connect_timeout=3"
        );
    }

    #[test]
    fn the_pooler_switch_is_taken_out_of_the_uri() {
        let (url, mode) = take_pooler_switch(
            "postgresql://h/db?sslmode=disable&machine_state_pooler=transaction",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url, "postgresql://h/db?sslmode=disable");
        assert_eq!(mode, Some(ConnectionMode::TransactionPooler));
        assert!(take_pooler_switch("postgresql://h/db?machine_state_pooler=statement").is_err());
        assert_eq!(
            take_pooler_switch("postgresql://h/db")
                .map(|(_, mode)| mode)
                .ok()
                .flatten(),
            None
        );
    }
}
