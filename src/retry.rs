//! How often, and how patiently, a transition is retried after losing a race.

use std::time::Duration;

use uuid::Uuid;

/// Bounded, jittered exponential backoff for serialization failures (40001)
/// and deadlocks (40P01).
///
/// Attempt `n` (from 1) that fails waits a random time between zero and
/// `min(max_delay, base_delay * 2^(n-1))` ("full jitter"), so workers that
/// collided do not collide again in lockstep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How many times a transition is tried in all. Defaults to 10.
    pub max_attempts: u32,
    /// The backoff ceiling of the first retry. Defaults to 2 ms.
    pub base_delay: Duration,
    /// The largest backoff ceiling. Defaults to 100 ms.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(100),
        }
    }
}

impl RetryPolicy {
    /// A policy that tries once and never retries.
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The one retry loop's bookkeeping (the write path's and
    /// [`crate::transaction`]'s): a first attempt now, then
    /// [`Schedule::retry`] after each lost race.
    pub(crate) fn schedule(&self) -> Schedule<'_> {
        self.schedule_at_most(self.max_attempts)
    }

    /// As [`schedule`](Self::schedule), with at most `max_attempts` attempts
    /// (1 inside a caller's transaction, which the caller retries whole).
    pub(crate) fn schedule_at_most(&self, max_attempts: u32) -> Schedule<'_> {
        Schedule {
            policy: self,
            max_attempts: max_attempts.clamp(1, self.max_attempts.max(1)),
            attempt: 1,
        }
    }

    /// The random pause after failed attempt `attempt` (counted from 1).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(20);
        let ceiling = self
            .base_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        // Full jitter: uniform in `0..=ceiling`. The random bits are a v4
        // UUID's (the OS generator `uuid` already links): its low 64 bits hold
        // 62 random ones, far more than a delay of nanoseconds needs.
        let random = Uuid::new_v4().as_u128() as u64;
        Duration::from_nanos(random % nanos.saturating_add(1))
    }
}

/// Where a retried operation stands: which attempt runs, and whether
/// another may follow.
#[derive(Debug)]
pub(crate) struct Schedule<'a> {
    policy: &'a RetryPolicy,
    max_attempts: u32,
    attempt: u32,
}

impl Schedule<'_> {
    /// The attempt running now, counted from 1.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// After a lost race: `false` when the budget is spent; otherwise sleep
    /// the backoff, count the next attempt, and return `true`.
    pub(crate) fn retry(&mut self) -> bool {
        if self.attempt >= self.max_attempts {
            return false;
        }
        std::thread::sleep(self.policy.backoff(self.attempt));
        self.attempt += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let policy = RetryPolicy::default();
        for attempt in 1..40 {
            assert!(policy.backoff(attempt) <= policy.max_delay);
        }
        assert!(policy.backoff(1) <= policy.base_delay);
    }
}
