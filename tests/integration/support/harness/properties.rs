//! Running properties: case counts, seeds, replay.

use std::fmt;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

use super::*;

/// The number of cases: `MACHINE_STATE_PROPTEST_CASES`, else
/// `PROPTEST_CASES`, else `default`.
pub(crate) fn cases(default: u32) -> u32 {
    for var in [CASES_VAR, "PROPTEST_CASES"] {
        if let Ok(value) = std::env::var(var) {
            return value
                .parse()
                .unwrap_or_else(|_| panic!("{var}={value} is not a number of cases"));
        }
    }
    default
}

/// A runner for `cases` cases with a known seed (`PROPTEST_RNG_SEED`, else
/// a random one), no regression files, and a bounded shrink (every shrink
/// step is a whole case against the database).
pub(crate) fn runner(cases: u32) -> (TestRunner, u64) {
    // `Config::default()` reads the `PROPTEST_*` variables, the seed among them.
    let mut config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 32,
        max_shrink_time: 120_000,
        ..Config::default()
    };
    let seed = match config.rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => fastrand::u64(..),
    };
    config.rng_seed = RngSeed::Fixed(seed);
    (TestRunner::new(config), seed)
}

/// Check `test` on `cases(default_cases)` schedules; on failure, panic with
/// the seed that regenerates them and the smallest failing schedule found.
pub(crate) fn property<S: Strategy>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: fmt::Debug,
{
    let cases = cases(default_cases);
    let (mut runner, seed) = runner(cases);
    eprintln!("{name}: {cases} case(s), seed {seed}");
    match runner.run(&strategy, test) {
        Ok(()) => {}
        Err(TestError::Fail(reason, schedule)) => panic!(
            "{name} failed (seed {seed}: replay with PROPTEST_RNG_SEED={seed})\n\
             {reason}\nsmallest failing case found: {schedule:?}"
        ),
        Err(TestError::Abort(reason)) => {
            panic!("{name} aborted (seed {seed}): {reason}")
        }
    }
}

/// Generate `cases` schedules from `strategy` with the seed of [`runner`],
/// without stopping at a failure (to measure how often something happens).
pub(crate) fn sample<S: Strategy>(cases: u32, strategy: &S) -> (Vec<S::Value>, u64) {
    let (mut runner, seed) = runner(cases);
    let values = (0..cases)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();
    (values, seed)
}
