//! Random concurrent schedules: no interleaving of starters, executors and
//! stoppers leaves the two tables disagreeing, and the very same harness
//! catches the legacy two-write pattern.
//!
//! `MACHINE_STATE_PROPTEST_CASES=<n>` scales the cases up; a failure prints
//! the seed (`PROPTEST_RNG_SEED=<seed>` regenerates the schedules).

use std::collections::BTreeMap;
use std::sync::Mutex;

use machine_state::RetryPolicy;

use crate::support::harness::{
    CaseReport, Chaos, CrateWriter, HarnessDb, cases, property, run_case, sample, schedules,
    schedules_with,
};
use crate::support::legacy_writer::LegacyWriter;

#[test]
fn concurrent_transitions_never_diverge_the_two_tables() {
    let db = HarnessDb::new();
    let writer = CrateWriter::default();
    let outcomes = Mutex::new(BTreeMap::new());
    property(
        "concurrent_transitions_never_diverge_the_two_tables",
        24,
        schedules(),
        |schedule| {
            let report = run_case(&db, &writer, Chaos::None, &schedule);
            let mut outcomes = outcomes.lock().unwrap();
            for (outcome, n) in &report.outcomes {
                *outcomes.entry(outcome.clone()).or_insert(0) += n;
            }
            report.into_result()
        },
    );
    eprintln!("outcomes {:?}", outcomes.into_inner().unwrap());
}

#[test]
fn a_hot_machine_without_retries_gives_only_typed_outcomes() {
    // Eight workers on one machine, no retries: lost races surface as
    // `RetriesExhausted` (typed, nothing written), never as anything else.
    let db = HarnessDb::new();
    let writer = CrateWriter {
        retry: RetryPolicy::never(),
    };
    let exhausted = Mutex::new(0);
    property(
        "a_hot_machine_without_retries_gives_only_typed_outcomes",
        16,
        schedules_with(1..=1, 8..=8),
        |schedule| {
            let report = run_case(&db, &writer, Chaos::None, &schedule);
            *exhausted.lock().unwrap() += report
                .outcomes
                .get("RetriesExhausted")
                .copied()
                .unwrap_or(0);
            report.into_result()
        },
    );
    eprintln!(
        "{} transition(s) gave up after one lost race",
        exhausted.into_inner().unwrap()
    );
}

#[test]
fn the_harness_catches_the_legacy_two_write_pattern() {
    // The same schedules, workers, pools and check as above, with the legacy
    // writer: the check must fail, with machines whose two rows disagree.
    let db = HarnessDb::new();
    let (schedules, seed) = sample(cases(24), &schedules());
    let reports: Vec<CaseReport> = schedules
        .iter()
        .map(|schedule| run_case(&db, &LegacyWriter, Chaos::None, schedule))
        .collect();
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for report in &reports {
        for (outcome, n) in &report.outcomes {
            *outcomes.entry(outcome).or_default() += n;
        }
    }
    let failed = reports.iter().filter(|r| !r.violations.is_empty()).count();
    let diverged_cases = reports.iter().filter(|r| r.diverged > 0).count();
    let diverged: usize = reports.iter().map(|r| r.diverged).sum();
    let machines: usize = reports.iter().map(|r| r.machines).sum();
    eprintln!(
        "legacy pattern (seed {seed}): check failed in {failed}/{} cases; \
         {diverged}/{machines} machines ({:.0}%) seen diverged, in {diverged_cases} cases; \
         outcomes {outcomes:?}",
        reports.len(),
        100.0 * diverged as f64 / machines as f64,
    );
    assert!(
        diverged > 0,
        "the harness did not catch the legacy pattern: no machine diverged in {} cases \
         (seed {seed})",
        reports.len()
    );
    assert!(failed >= diverged_cases);
}
