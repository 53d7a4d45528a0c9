//! A circuit breaker for the gateway.
//!
//! - **Closed**: calls go through; `failure_threshold` consecutive transient failures open it.
//! - **Open**: calls are refused for `cool_down` (the events wait in the stream; nothing is lost).
//! - **Half-open**: after the cool-down one trial call goes through; success closes the
//!   breaker, failure opens it for another cool-down.
//!
//! The clock is injected: every method that needs the time takes `now`, so tests drive time
//! explicitly and never sleep. Only transient failures should be recorded as failures; a
//! decline is a healthy answer from the gateway. The breaker is plain state: share it between
//! tasks behind a mutex.

use std::time::{Duration, Instant};

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (0 behaves like 1).
    pub failure_threshold: u32,
    /// How long the breaker stays open before allowing a trial call.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cool_down: Duration::from_secs(10),
        }
    }
}

/// The breaker's state as seen from outside (for metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// A call refused because the breaker is open (or its half-open trial is in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; retry in {retry_after:?}")]
pub struct CircuitOpen {
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

/// Closed / open / half-open breaker driven by an injected clock.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Inner,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            config,
            inner: Inner::Closed { failures: 0 },
        }
    }

    /// The current state at `now` (an open breaker whose cool-down is over reports half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if now < until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make a call at `now`. On `Ok` the caller makes it and then reports the result
    /// with [`record_success`](Self::record_success) or [`record_failure`](Self::record_failure).
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), CircuitOpen> {
        match self.inner {
            Inner::Closed { .. } => Ok(()),
            Inner::Open { until } if now < until => Err(CircuitOpen {
                retry_after: until - now,
            }),
            Inner::Open { .. }
            | Inner::HalfOpen {
                trial_in_flight: false,
            } => {
                self.inner = Inner::HalfOpen {
                    trial_in_flight: true,
                };
                Ok(())
            }
            Inner::HalfOpen {
                trial_in_flight: true,
            } => Err(CircuitOpen {
                retry_after: self.config.cool_down,
            }),
        }
    }

    /// Gives back a half-open trial taken with [`try_acquire`](Self::try_acquire) for a call
    /// that was not made after all (another breaker refused it).
    pub fn release_trial(&mut self) {
        if let Inner::HalfOpen {
            trial_in_flight: true,
        } = self.inner
        {
            self.inner = Inner::HalfOpen {
                trial_in_flight: false,
            };
        }
    }

    /// Closed with no failure counted: nothing to remember about this breaker.
    pub fn is_clear(&self) -> bool {
        self.inner == Inner::Closed { failures: 0 }
    }

    /// The call succeeded: closes a half-open breaker, resets the failure count of a closed one.
    pub fn record_success(&mut self) {
        match self.inner {
            Inner::Closed { .. } | Inner::HalfOpen { .. } => {
                self.inner = Inner::Closed { failures: 0 }
            }
            // A call that started before the breaker opened says nothing about now.
            Inner::Open { .. } => {}
        }
    }

    /// The call failed transiently at `now`.
    pub fn record_failure(&mut self, now: Instant) {
        match self.inner {
            Inner::Closed { failures } => {
                let failures = failures.saturating_add(1);
                self.inner = if failures >= self.config.failure_threshold.max(1) {
                    Inner::Open {
                        until: now + self.config.cool_down,
                    }
                } else {
                    Inner::Closed { failures }
                };
            }
            Inner::HalfOpen { .. } => {
                self.inner = Inner::Open {
                    until: now + self.config.cool_down,
                }
            }
            Inner::Open { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CFG: BreakerConfig = BreakerConfig {
        failure_threshold: 3,
        cool_down: Duration::from_secs(10),
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(CFG);
        b.record_failure(t0);
        b.record_failure(t0);
        b.record_success(); // resets the streak
        b.record_failure(t0);
        b.record_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert_eq!(b.try_acquire(t0), Ok(()));
        b.record_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(
            b.try_acquire(t0 + secs(4)),
            Err(CircuitOpen {
                retry_after: secs(6)
            })
        );
    }

    #[test]
    fn half_open_allows_one_trial_and_closes_on_success() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(CFG);
        (0..3).for_each(|_| b.record_failure(t0));
        let later = t0 + secs(10);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert_eq!(b.try_acquire(later), Ok(()));
        assert_eq!(
            b.try_acquire(later),
            Err(CircuitOpen {
                retry_after: secs(10)
            })
        );
        b.record_success();
        assert_eq!(b.state(later), BreakerState::Closed);
        assert_eq!(b.try_acquire(later), Ok(()));
    }

    #[test]
    fn failed_trial_reopens_for_a_full_cool_down() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(CFG);
        (0..3).for_each(|_| b.record_failure(t0));
        let t1 = t0 + secs(12);
        b.try_acquire(t1).unwrap();
        b.record_failure(t1);
        assert_eq!(
            b.try_acquire(t1 + secs(9)),
            Err(CircuitOpen {
                retry_after: secs(1)
            })
        );
        assert_eq!(b.try_acquire(t1 + secs(10)), Ok(()));
    }

    #[test]
    fn a_released_trial_lets_the_next_caller_try() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(CFG);
        (0..3).for_each(|_| b.record_failure(t0));
        let later = t0 + secs(10);
        b.try_acquire(later).unwrap();
        assert!(b.try_acquire(later).is_err());
        b.release_trial();
        assert_eq!(b.try_acquire(later), Ok(()));
        assert!(!b.is_clear());
        b.record_success();
        assert!(b.is_clear());
    }

    #[test]
    fn zero_threshold_opens_on_the_first_failure() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 0,
            ..CFG
        });
        b.record_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Advance(u64),
        Call { ok: bool },
    }

    proptest! {
        /// Against any sequence of calls and clock advances: no call is let through while open
        /// within the cool-down, half-open lets through one trial at a time, and `threshold`
        /// consecutive failures while closed always open the breaker.
        #[test]
        fn never_lets_calls_through_while_open(ops in proptest::collection::vec(
            prop_oneof![(0u64..8).prop_map(Op::Advance), any::<bool>().prop_map(|ok| Op::Call { ok })], 0..100)
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut b = CircuitBreaker::new(CFG);
            let mut opened_at: Option<Instant> = None;
            let mut streak = 0;
            for op in ops {
                match op {
                    Op::Advance(s) => now += secs(s),
                    Op::Call { ok } => {
                        let before = b.state(now);
                        match b.try_acquire(now) {
                            Ok(()) => {
                                prop_assert_ne!(before, BreakerState::Open);
                                if let Some(at) = opened_at {
                                    prop_assert!(now >= at + CFG.cool_down);
                                }
                                // A second caller during a half-open trial is refused.
                                if before == BreakerState::HalfOpen {
                                    prop_assert!(b.clone().try_acquire(now).is_err());
                                }
                                if ok {
                                    b.record_success();
                                    streak = 0;
                                    opened_at = None;
                                } else {
                                    b.record_failure(now);
                                    streak += 1;
                                    if before == BreakerState::HalfOpen || streak >= CFG.failure_threshold {
                                        prop_assert_eq!(b.state(now), BreakerState::Open);
                                        opened_at = Some(now);
                                        streak = 0;
                                    }
                                }
                            }
                            Err(open) => {
                                prop_assert_eq!(before, BreakerState::Open);
                                prop_assert!(open.retry_after <= CFG.cool_down);
                            }
                        }
                    }
                }
            }
        }
    }
}
