//! Exponential backoff with full jitter, for transient gateway failures.
//!
//! After the n-th failed attempt the delay is drawn uniformly from
//! `0..=min(max_delay, base_delay * 2^(n-1))` ("full jitter"), which spreads retries of many
//! orders that failed at the same moment. The policy only computes delays; the caller sleeps
//! (or naks the message with that delay), so it works the same in-process or counted by the
//! stream's delivery attempts.

use std::time::Duration;

use rand::Rng;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first one (0 behaves like 1: no retries).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the delay after `failed_attempts` failures (zero before any failure).
    pub fn ceiling(&self, failed_attempts: u32) -> Duration {
        if failed_attempts == 0 {
            return Duration::ZERO;
        }
        // 2^(n-1), saturating: past 2^31 the cap has long been reached anyway.
        let factor = 1u32.checked_shl(failed_attempts - 1).unwrap_or(u32::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// The delay before the next attempt after `failed_attempts` failures, or `None` when the
    /// attempts are used up.
    pub fn next_delay<R: Rng + ?Sized>(
        &self,
        failed_attempts: u32,
        rng: &mut R,
    ) -> Option<Duration> {
        if failed_attempts >= self.max_attempts.max(1) {
            return None;
        }
        let ceiling = self.ceiling(failed_attempts);
        if ceiling.is_zero() {
            return Some(Duration::ZERO);
        }
        let nanos = rng.random_range(0..=ceiling.as_nanos());
        Some(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(500),
    };

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let c: Vec<u128> = (0..6).map(|n| POLICY.ceiling(n).as_millis()).collect();
        assert_eq!(c, [0, 100, 200, 400, 500, 500]);
        assert_eq!(POLICY.ceiling(u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn stops_after_max_attempts() {
        let mut rng = StdRng::seed_from_u64(1);
        assert!(POLICY.next_delay(4, &mut rng).is_some());
        assert_eq!(POLICY.next_delay(5, &mut rng), None);
        let once = RetryPolicy {
            max_attempts: 0,
            ..POLICY
        };
        assert_eq!(once.next_delay(1, &mut rng), None);
    }

    #[test]
    fn jitter_spreads_delays_over_the_whole_range() {
        let mut rng = StdRng::seed_from_u64(3);
        let delays: Vec<Duration> = (0..1000)
            .map(|_| POLICY.next_delay(3, &mut rng).unwrap())
            .collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        assert!(delays.iter().any(|d| *d < Duration::from_millis(40)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(360)));
    }

    proptest! {
        #[test]
        fn delay_never_exceeds_cap_or_exponential_bound(
            seed in any::<u64>(),
            failed in 1u32..64,
            base_ms in 0u64..10_000,
            cap_ms in 0u64..100_000,
        ) {
            let p = RetryPolicy { max_attempts: 100, base_delay: Duration::from_millis(base_ms), max_delay: Duration::from_millis(cap_ms) };
            let d = p.next_delay(failed, &mut StdRng::seed_from_u64(seed)).unwrap();
            prop_assert!(d <= p.max_delay);
            prop_assert!(d <= p.ceiling(failed));
            prop_assert!(p.ceiling(failed) <= p.ceiling(failed + 1));
        }
    }
}
