//! How patiently a migration (or its revert) waits for the locks it needs.

use std::time::{Duration, Instant};

/// How a migration or a revert (and the other changes of the schema's
/// objects: the history's [`prepare`](crate::history::prepare_history_with)
/// and [`prune`](crate::history::prune_history_with), `doctor`'s
/// [fixes](crate::doctor::fix_exposures_with)) waits for locks that other
/// sessions hold: each attempt waits at most
/// [`lock_timeout`](Self::lock_timeout) for any one lock, and attempts are
/// retried, with jittered backoff, until the run's [`budget`](Self::budget)
/// is spent.
///
/// PostgreSQL queues lock requests: while a migration waits for a lock, every
/// later writer of that table waits behind it. With a short lock timeout a
/// waiting migration leaves the queue after that long, so writers stall at
/// most about that long (plus the few milliseconds a migration holds its
/// locks once it has them), however long the session in its way stays open.
///
/// ```
/// use std::time::Duration;
/// use machine_state::MigrationOptions;
///
/// let options = MigrationOptions::default()
///     .with_lock_timeout(Duration::from_millis(200))
///     .with_budget(Duration::from_secs(120));
/// assert_eq!(options.lock_timeout(), Duration::from_millis(200));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrationOptions {
    lock_timeout: Duration,
    budget: Duration,
}

impl MigrationOptions {
    /// The default [`lock_timeout`](Self::lock_timeout): 500 ms.
    pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_millis(500);

    /// The default [`budget`](Self::budget): 60 s.
    pub const DEFAULT_BUDGET: Duration = Duration::from_secs(60);

    /// The longest backoff ceiling between two attempts.
    const MAX_BACKOFF: Duration = Duration::from_secs(5);

    /// How long one attempt waits for any one lock before it gives up
    /// (PostgreSQL's `lock_timeout`, set for the migration's transaction
    /// only). Defaults to 500 ms; at least 1 ms.
    #[must_use]
    pub fn with_lock_timeout(mut self, lock_timeout: Duration) -> Self {
        self.lock_timeout = lock_timeout.max(Duration::from_millis(1));
        self
    }

    /// How long one run (applying the pending migrations, or reverting) may
    /// keep trying, in all, before it stops with
    /// [`Error::MigrationBlocked`](crate::Error::MigrationBlocked)
    /// ([`Error::Blocked`](crate::Error::Blocked) for the other changes). A
    /// new attempt starts only while a full lock wait still fits in the
    /// budget.
    /// Defaults to 60 s.
    #[must_use]
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// How long one attempt waits for any one lock.
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// How long one run may keep trying, in all.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// The most attempts the budget can hold: each blocked attempt costs at
    /// least the lock timeout (at least 1).
    pub fn max_attempts(&self) -> u32 {
        let ratio = self.budget.as_millis() / self.lock_timeout.as_millis().max(1);
        u32::try_from(ratio).unwrap_or(u32::MAX).max(1)
    }

    /// The pause before trying again after the blocked attempt number
    /// `attempt` (the first is 1) of a run that must end by `deadline`:
    /// `None` when the budget is spent (no attempts left, or no room for one
    /// more full lock wait), else the [`backoff`](Self::backoff), shortened
    /// to leave that room.
    pub(crate) fn pause_before_retry(&self, attempt: u32, deadline: Instant) -> Option<Duration> {
        let left = deadline.saturating_duration_since(Instant::now());
        if attempt >= self.max_attempts() || left < self.lock_timeout {
            return None;
        }
        Some(self.backoff(attempt).min(left - self.lock_timeout))
    }

    /// The random pause after blocked attempt `attempt` (from 1): uniform
    /// between zero and `min(5 s, lock_timeout * 2^(attempt-1))` ("full
    /// jitter"), so that writers get the table between attempts and two
    /// deployers do not retry in lockstep.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(16);
        let ceiling = self
            .lock_timeout
            .saturating_mul(1 << doublings)
            .min(Self::MAX_BACKOFF);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        // The random bits are a v4 UUID's, as `RetryPolicy::backoff`'s.
        let random = uuid::Uuid::new_v4().as_u128() as u64;
        Duration::from_millis(random % millis.saturating_add(1))
    }
}

impl Default for MigrationOptions {
    fn default() -> Self {
        MigrationOptions {
            lock_timeout: Self::DEFAULT_LOCK_TIMEOUT,
            budget: Self::DEFAULT_BUDGET,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_bounds_the_attempts_and_backoff_stays_under_its_ceiling() {
        let options = MigrationOptions::default();
        assert_eq!(options.max_attempts(), 120);
        for attempt in 1..40 {
            assert!(options.backoff(attempt) <= MigrationOptions::MAX_BACKOFF);
        }
        assert!(options.backoff(1) <= options.lock_timeout());
        let tiny = options.with_budget(Duration::ZERO);
        assert_eq!(tiny.max_attempts(), 1);
    }

    #[test]
    fn a_retry_waits_only_while_one_more_full_lock_wait_fits_the_budget() {
        let options = MigrationOptions::default();
        let now = Instant::now();
        assert_eq!(options.pause_before_retry(1, now), None, "budget spent");
        let tight = now + options.lock_timeout() + Duration::from_millis(100);
        let pause = options.pause_before_retry(1, tight).unwrap();
        assert!(pause <= Duration::from_millis(100), "{pause:?}");
        let far = now + Duration::from_secs(3600);
        assert_eq!(
            options.pause_before_retry(options.max_attempts(), far),
            None
        );
    }
}
