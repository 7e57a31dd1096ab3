//! A server that does not speak English: PostgreSQL's messages follow
//! `lc_messages`, so a decision read from a message's words breaks on a
//! German factory's server. Debian's PostgreSQL ships the translations; the
//! operating system's locale must exist (`localedef`, which `.ci/run` runs).

use std::process::Command;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

/// The locale a German server runs with.
pub(crate) const GERMAN: &str = "de_DE.UTF-8";

/// Make every new session of `database` speak German, and check that it
/// does (so a test on it cannot pass on English messages by accident).
pub(crate) fn speak_german(conn: &mut PgConnection, database: &str) {
    ensure_locale();
    conn.batch_execute(&format!(
        "ALTER DATABASE \"{database}\" SET lc_messages = '{GERMAN}'"
    ))
    .unwrap_or_else(|e| panic!("cannot set `lc_messages` to `{GERMAN}`: {e}"));
    conn.batch_execute(&format!("SET lc_messages = '{GERMAN}'"))
        .unwrap();
    assert_speaks_german(conn);
}

/// Panic unless the server answers `conn` in German.
pub(crate) fn assert_speaks_german(conn: &mut PgConnection) {
    let error = conn
        .batch_execute("SELECT 1 / 0")
        .expect_err("a division by zero fails");
    let message = error.to_string();
    assert!(
        message.contains("Division durch Null"),
        "the server does not speak German: {message}"
    );
}

/// Generate the German locale when the operating system lacks it (as root,
/// the way `.ci/run` does), or say how to.
fn ensure_locale() {
    if has_locale() {
        return;
    }
    let generated = Command::new("localedef")
        .args(["-i", "de_DE", "-f", "UTF-8", GERMAN])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        generated && has_locale(),
        "the locale `{GERMAN}` is missing: run `localedef -i de_DE -f UTF-8 {GERMAN}` as root \
         (Debian's `locales` package)"
    );
}

fn has_locale() -> bool {
    Command::new("locale").arg("-a").output().is_ok_and(|out| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.eq_ignore_ascii_case("de_DE.utf8") || l == GERMAN)
    })
}
