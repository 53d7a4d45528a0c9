//! The one backoff every retry in jetmart uses: consumer redeliveries, gateway retries in
//! payment, start-up steps in the kit.
//!
//! Exponential from `initial`, doubling per failure up to `max`, with jitter from `backon`: the
//! delay after the n-th failure is drawn from `[c/2, c)` where `c = min(max, initial * 2^(n-1))`,
//! so retries of many callers that failed at the same moment spread out, and no delay ever
//! exceeds `max`. The policy only computes delays; the caller sleeps (or naks a message with the
//! delay), so it works the same in-process or counted by a stream's delivery attempts.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

/// Failures past this one get the same (capped) delay; bounds the work of one computation.
const MAX_STEPS: u32 = 64;

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }

    /// The ceiling of the delay after `failures` failures (zero before any).
    pub fn ceiling(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32
            .checked_shl(failures.min(MAX_STEPS) - 1)
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt after `failures` failures (zero before any).
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 || self.max.is_zero() {
            return Duration::ZERO;
        }
        // backon adds up to 100% of the current delay: run it on half the range.
        let half = |d: Duration| d / 2;
        let steps = failures.min(MAX_STEPS) as usize;
        let drawn = ExponentialBuilder::default()
            .with_min_delay(half(self.initial.min(self.max)))
            .with_max_delay(half(self.max))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(steps - 1)
            .unwrap_or(self.max);
        drawn.min(self.ceiling(failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let c: Vec<u128> = (0..6).map(|n| B.ceiling(n).as_millis()).collect();
        assert_eq!(c, [0, 100, 200, 400, 500, 500]);
        assert_eq!(B.ceiling(u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn delays_stay_in_the_upper_half_of_the_ceiling() {
        for failures in 1..80 {
            for _ in 0..50 {
                let d = B.delay(failures);
                let c = B.ceiling(failures);
                assert!(
                    d <= c && d >= c / 2 - Duration::from_millis(1),
                    "{failures}: {d:?} of {c:?}"
                );
            }
        }
        assert_eq!(B.delay(0), Duration::ZERO);
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let delays: std::collections::HashSet<Duration> = (0..100).map(|_| B.delay(3)).collect();
        assert!(delays.len() > 10, "{} distinct delays", delays.len());
    }

    #[test]
    fn zero_settings_mean_no_wait() {
        let none = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(none.delay(5), Duration::ZERO);
        let tiny = Backoff::new(Duration::from_millis(5), Duration::from_millis(1));
        assert!(tiny.delay(3) <= Duration::from_millis(1));
    }
}
