//! Stock accounting for one SKU.
//!
//! Units move between three buckets: `available` (can be reserved), `reserved` (held for a
//! PENDING order) and `sold` (committed for a CONFIRMED order). Only adjustments (restock,
//! write-off, correction) change the total, so for every SKU:
//!
//! `initial + sum(adjustment deltas) = available + reserved + sold`
//!
//! [`apply_movement`] is the only way a level changes; it refuses anything that would make a
//! bucket negative or overflow, so the identity and non-negativity hold by construction. Every
//! applied movement is meant to be appended to the ledger.

use serde::{Deserialize, Serialize};

/// Longest reason text accepted for an adjustment.
pub const MAX_REASON_LEN: usize = 200;

/// Stock of one SKU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StockLevel {
    pub available: u64,
    pub reserved: u64,
    pub sold: u64,
}

impl StockLevel {
    /// A fresh SKU with `available` units and nothing reserved or sold.
    pub const fn new(available: u64) -> StockLevel {
        StockLevel {
            available,
            reserved: 0,
            sold: 0,
        }
    }

    /// Units physically in the warehouse: available plus reserved.
    pub const fn on_hand(&self) -> u64 {
        self.available.saturating_add(self.reserved)
    }

    /// `available + reserved + sold`, the right-hand side of the accounting identity.
    pub const fn accounted(&self) -> u128 {
        self.available as u128 + self.reserved as u128 + self.sold as u128
    }
}

/// A change to a SKU's stock; each applied movement is one ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Movement {
    /// available -> reserved, for a placed order.
    Reserve { quantity: u64 },
    /// reserved -> available, when the order is cancelled.
    Release { quantity: u64 },
    /// reserved -> sold, when the order is confirmed.
    Commit { quantity: u64 },
    /// Restock (positive) or write-off (negative) of available units, with a reason.
    Adjust { delta: i64, reason: String },
}

impl Movement {
    /// Ledger name of the movement kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Movement::Reserve { .. } => "reserve",
            Movement::Release { .. } => "release",
            Movement::Commit { .. } => "commit",
            Movement::Adjust { .. } => "adjust",
        }
    }
}

/// Why a movement was refused; the level is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MovementError {
    #[error("not enough available stock: {available} available, {requested} needed")]
    InsufficientAvailable { available: u64, requested: u64 },
    #[error("not enough reserved stock: {reserved} reserved, {requested} needed")]
    InsufficientReserved { reserved: u64, requested: u64 },
    #[error("a movement must move at least one unit")]
    ZeroQuantity,
    #[error("an adjustment needs a reason of 1 to {MAX_REASON_LEN} bytes")]
    BadReason,
    #[error("stock level would overflow")]
    Overflow,
}

/// Applies `movement` to `level`, returning the new level, or why it is refused.
pub fn apply_movement(level: StockLevel, movement: &Movement) -> Result<StockLevel, MovementError> {
    let mut next = level;
    match *movement {
        Movement::Reserve { quantity: q } => {
            nonzero(q)?;
            next.available = take_available(level.available, q)?;
            next.reserved = add(level.reserved, q)?;
        }
        Movement::Release { quantity: q } => {
            nonzero(q)?;
            next.reserved = take_reserved(level.reserved, q)?;
            next.available = add(level.available, q)?;
        }
        Movement::Commit { quantity: q } => {
            nonzero(q)?;
            next.reserved = take_reserved(level.reserved, q)?;
            next.sold = add(level.sold, q)?;
        }
        Movement::Adjust { delta, ref reason } => {
            if reason.trim().is_empty() || reason.len() > MAX_REASON_LEN {
                return Err(MovementError::BadReason);
            }
            nonzero(delta.unsigned_abs())?;
            next.available = if delta >= 0 {
                add(level.available, delta.unsigned_abs())?
            } else {
                take_available(level.available, delta.unsigned_abs())?
            };
        }
    }
    // Keep the sum representable so the accounting identity can always be checked in u64.
    if next.accounted() > u128::from(u64::MAX) {
        return Err(MovementError::Overflow);
    }
    Ok(next)
}

fn nonzero(q: u64) -> Result<(), MovementError> {
    if q == 0 {
        Err(MovementError::ZeroQuantity)
    } else {
        Ok(())
    }
}

fn add(a: u64, b: u64) -> Result<u64, MovementError> {
    a.checked_add(b).ok_or(MovementError::Overflow)
}

fn take_available(available: u64, requested: u64) -> Result<u64, MovementError> {
    available
        .checked_sub(requested)
        .ok_or(MovementError::InsufficientAvailable {
            available,
            requested,
        })
}

fn take_reserved(reserved: u64, requested: u64) -> Result<u64, MovementError> {
    reserved
        .checked_sub(requested)
        .ok_or(MovementError::InsufficientReserved {
            reserved,
            requested,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn adjust(delta: i64) -> Movement {
        Movement::Adjust {
            delta,
            reason: "restock".into(),
        }
    }

    #[test]
    fn reserve_release_commit_move_units_between_buckets() {
        let s = StockLevel::new(10);
        let s = apply_movement(s, &Movement::Reserve { quantity: 4 }).unwrap();
        assert_eq!(
            s,
            StockLevel {
                available: 6,
                reserved: 4,
                sold: 0
            }
        );
        assert_eq!(s.on_hand(), 10);
        let s = apply_movement(s, &Movement::Release { quantity: 1 }).unwrap();
        assert_eq!(
            s,
            StockLevel {
                available: 7,
                reserved: 3,
                sold: 0
            }
        );
        let s = apply_movement(s, &Movement::Commit { quantity: 3 }).unwrap();
        assert_eq!(
            s,
            StockLevel {
                available: 7,
                reserved: 0,
                sold: 3
            }
        );
        assert_eq!(s.on_hand(), 7);
    }

    #[test]
    fn refuses_to_go_negative() {
        let s = StockLevel {
            available: 2,
            reserved: 1,
            sold: 0,
        };
        assert_eq!(
            apply_movement(s, &Movement::Reserve { quantity: 3 }),
            Err(MovementError::InsufficientAvailable {
                available: 2,
                requested: 3
            })
        );
        assert_eq!(
            apply_movement(s, &Movement::Release { quantity: 2 }),
            Err(MovementError::InsufficientReserved {
                reserved: 1,
                requested: 2
            })
        );
        assert_eq!(
            apply_movement(s, &Movement::Commit { quantity: 2 }),
            Err(MovementError::InsufficientReserved {
                reserved: 1,
                requested: 2
            })
        );
        // A write-off cannot take reserved units.
        assert_eq!(
            apply_movement(s, &adjust(-3)),
            Err(MovementError::InsufficientAvailable {
                available: 2,
                requested: 3
            })
        );
        assert_eq!(
            apply_movement(s, &adjust(i64::MIN)),
            Err(MovementError::InsufficientAvailable {
                available: 2,
                requested: 1 << 63
            })
        );
    }

    #[test]
    fn adjustments_restock_and_write_off() {
        let s = StockLevel::new(5);
        assert_eq!(apply_movement(s, &adjust(7)).unwrap().available, 12);
        assert_eq!(apply_movement(s, &adjust(-5)).unwrap().available, 0);
    }

    #[test]
    fn refuses_empty_movements_and_reasons() {
        let s = StockLevel::new(5);
        assert_eq!(
            apply_movement(s, &Movement::Reserve { quantity: 0 }),
            Err(MovementError::ZeroQuantity)
        );
        assert_eq!(
            apply_movement(s, &adjust(0)),
            Err(MovementError::ZeroQuantity)
        );
        let blank = Movement::Adjust {
            delta: 1,
            reason: "  ".into(),
        };
        assert_eq!(apply_movement(s, &blank), Err(MovementError::BadReason));
        let long = Movement::Adjust {
            delta: 1,
            reason: "x".repeat(MAX_REASON_LEN + 1),
        };
        assert_eq!(apply_movement(s, &long), Err(MovementError::BadReason));
    }

    #[test]
    fn refuses_overflow() {
        let s = StockLevel {
            available: u64::MAX - 1,
            reserved: 1,
            sold: 0,
        };
        assert_eq!(apply_movement(s, &adjust(1)), Err(MovementError::Overflow));
        assert_eq!(
            apply_movement(StockLevel::new(u64::MAX), &adjust(1)),
            Err(MovementError::Overflow)
        );
    }

    #[test]
    fn ledger_kind_names_and_json_shape() {
        assert_eq!(Movement::Commit { quantity: 1 }.kind(), "commit");
        let json = serde_json::to_string(&adjust(-2)).unwrap();
        assert_eq!(json, r#"{"kind":"adjust","delta":-2,"reason":"restock"}"#);
    }

    fn arb_movement() -> impl Strategy<Value = Movement> {
        prop_oneof![
            (0u64..20).prop_map(|quantity| Movement::Reserve { quantity }),
            (0u64..20).prop_map(|quantity| Movement::Release { quantity }),
            (0u64..20).prop_map(|quantity| Movement::Commit { quantity }),
            (-20i64..20).prop_map(adjust),
            prop_oneof![Just(i64::MIN), Just(i64::MAX)].prop_map(adjust),
        ]
    }

    proptest! {
        /// Under any sequence of movements (refused ones leave the level untouched):
        /// initial + applied adjustments = available + reserved + sold, reserved units only
        /// leave through release or commit, and sold never decreases.
        #[test]
        fn accounting_identity_holds(initial in 0u64..50, movements in proptest::collection::vec(arb_movement(), 0..60)) {
            let mut level = StockLevel::new(initial);
            let mut adjustments: i128 = 0;
            for m in &movements {
                let before = level;
                match apply_movement(level, m) {
                    Ok(next) => {
                        if let Movement::Adjust { delta, .. } = m {
                            adjustments += i128::from(*delta);
                            prop_assert_eq!(next.reserved, before.reserved);
                            prop_assert_eq!(next.sold, before.sold);
                        }
                        prop_assert!(next.sold >= before.sold);
                        level = next;
                    }
                    Err(_) => prop_assert_eq!(level, before),
                }
                prop_assert_eq!(i128::from(initial) + adjustments, level.accounted() as i128);
            }
        }
    }
}
