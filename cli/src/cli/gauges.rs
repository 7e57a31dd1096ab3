//! The metrics `watch` records from its audits (the library's own, about
//! each transition, are `machine_state::telemetry`'s): their names, and
//! their help texts. The README's "Monitoring" lists them.

use metrics::{describe_counter, describe_gauge};

/// Machines seen by the last audit.
pub(crate) const MACHINES: &str = "machine_state_machines";
/// Diverged machines found by the last audit.
pub(crate) const DIVERGED: &str = "machine_state_diverged_machines";
/// The diverged share found by the last audit, 0 to 1.
pub(crate) const DIVERGED_RATIO: &str = "machine_state_diverged_ratio";
/// Machines processing for too long, found by the last audit.
pub(crate) const STUCK: &str = "machine_state_stuck_machines";
/// Whether the invariants are enforced by the database (1) or not (0).
pub(crate) const ENFORCED: &str = "machine_state_invariants_enforced";
/// Audits run, by `result`.
pub(crate) const AUDITS: &str = "machine_state_audits_total";
/// History rows written by every client, by `from`, `to` and `kind`.
pub(crate) const RECORDED_TRANSITIONS: &str = "machine_state_recorded_transitions_total";

/// Give each of them its help text, in the recorder installed now.
pub(crate) fn describe() {
    describe_gauge!(MACHINES, "machines seen by the last audit");
    describe_gauge!(
        DIVERGED,
        "machines whose `machines` and `machine_state` rows disagree (last audit)"
    );
    describe_gauge!(
        DIVERGED_RATIO,
        "diverged machines divided by machines (last audit), 0 to 1"
    );
    describe_gauge!(
        STUCK,
        "machines processing for longer than the watcher's `--stuck-after` (last audit)"
    );
    describe_gauge!(
        ENFORCED,
        "1 when `machine_state_enforce_invariants()` is in force, else 0 (last audit)"
    );
    describe_counter!(AUDITS, "audits run by the watcher, by `result`");
    describe_counter!(
        RECORDED_TRANSITIONS,
        "rows written to the history `machine_state_transitions` by every client, since the watcher started"
    );
}
