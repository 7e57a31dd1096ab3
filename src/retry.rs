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
