//! The low-stock rule: signal `inventory.low` once, when available stock *crosses* below the
//! threshold, not on every movement while it stays low. A restock back to the threshold or
//! above re-arms the rule, so the next fall signals again.

use serde::{Deserialize, Serialize};

use super::stock::StockLevel;

/// Signal when `available` drops below `threshold` units. A threshold of 0 never signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LowStockRule {
    pub threshold: u64,
}

/// Available stock of a SKU just fell below its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LowStock {
    pub available: u64,
    pub threshold: u64,
}

impl LowStockRule {
    /// The signal for a movement from `before` to `after`, if it crossed the threshold downwards.
    pub fn check(&self, before: &StockLevel, after: &StockLevel) -> Option<LowStock> {
        let crossed = before.available >= self.threshold && after.available < self.threshold;
        crossed.then_some(LowStock {
            available: after.available,
            threshold: self.threshold,
        })
    }

    /// Whether `level` is currently below the threshold (for dashboards and ListStock).
    pub fn is_low(&self, level: &StockLevel) -> bool {
        level.available < self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stock::{Movement, apply_movement};
    use proptest::prelude::*;

    const RULE: LowStockRule = LowStockRule { threshold: 5 };

    fn at(available: u64) -> StockLevel {
        StockLevel::new(available)
    }

    #[test]
    fn signals_only_on_the_downward_crossing() {
        assert_eq!(RULE.check(&at(6), &at(5)), None);
        assert_eq!(
            RULE.check(&at(5), &at(4)),
            Some(LowStock {
                available: 4,
                threshold: 5
            })
        );
        assert_eq!(
            RULE.check(&at(9), &at(0)),
            Some(LowStock {
                available: 0,
                threshold: 5
            })
        );
        // Still low: no repeat.
        assert_eq!(RULE.check(&at(4), &at(3)), None);
        // Rising or restocking never signals.
        assert_eq!(RULE.check(&at(3), &at(8)), None);
        assert!(RULE.is_low(&at(4)));
        assert!(!RULE.is_low(&at(5)));
    }

    #[test]
    fn zero_threshold_never_signals() {
        let rule = LowStockRule { threshold: 0 };
        assert_eq!(rule.check(&at(1), &at(0)), None);
    }

    proptest! {
        /// Over any run of movements, signals = number of downward crossings, and signals
        /// alternate with re-arming (no two signals without a climb back in between).
        #[test]
        fn one_signal_per_crossing(threshold in 0u64..10, moves in proptest::collection::vec((0u8..3, 1u64..6), 0..80)) {
            let rule = LowStockRule { threshold };
            let mut level = StockLevel::new(8);
            let mut armed = !rule.is_low(&level);
            for (kind, q) in moves {
                let m = match kind {
                    0 => Movement::Reserve { quantity: q },
                    1 => Movement::Release { quantity: q },
                    _ => Movement::Adjust { delta: q as i64, reason: "restock".into() },
                };
                let Ok(next) = apply_movement(level, &m) else { continue };
                let signal = rule.check(&level, &next);
                prop_assert_eq!(signal.is_some(), armed && rule.is_low(&next));
                if signal.is_some() {
                    armed = false;
                }
                if !rule.is_low(&next) {
                    armed = true;
                }
                level = next;
            }
        }
    }
}
