//! How many gateway calls one event delivery makes, and how long it waits between them
//! (the shared [`jetmart_runtime::backoff`]: exponential with jitter).

use std::time::Duration;

use jetmart_runtime::backoff::Backoff;

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
    fn backoff(&self) -> Backoff {
        Backoff::new(self.base_delay, self.max_delay)
    }

    /// The upper bound of the delay after `failed_attempts` failures (zero before any failure).
    pub fn ceiling(&self, failed_attempts: u32) -> Duration {
        self.backoff().ceiling(failed_attempts)
    }

    /// The delay before the next attempt after `failed_attempts` failures, or `None` when the
    /// attempts are used up.
    pub fn next_delay(&self, failed_attempts: u32) -> Option<Duration> {
        if failed_attempts >= self.max_attempts.max(1) {
            return None;
        }
        Some(self.backoff().delay(failed_attempts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        assert!(POLICY.next_delay(4).is_some());
        assert_eq!(POLICY.next_delay(5), None);
        let once = RetryPolicy {
            max_attempts: 0,
            ..POLICY
        };
        assert_eq!(once.next_delay(1), None);
    }

    proptest! {
        #[test]
        fn delay_never_exceeds_cap_or_exponential_bound(
            failed in 1u32..64,
            base_ms in 0u64..10_000,
            cap_ms in 0u64..100_000,
        ) {
            let p = RetryPolicy { max_attempts: 100, base_delay: Duration::from_millis(base_ms), max_delay: Duration::from_millis(cap_ms) };
            let d = p.next_delay(failed).unwrap();
            prop_assert!(d <= p.max_delay);
            prop_assert!(d <= p.ceiling(failed));
            prop_assert!(p.ceiling(failed) <= p.ceiling(failed + 1));
        }
    }
}
