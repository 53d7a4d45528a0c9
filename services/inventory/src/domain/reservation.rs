//! The all-or-nothing reservation decision.
//!
//! Given an order's requested lines and the current availability per SKU, either every line
//! can be reserved or none is, and the answer lists every short SKU. The caller reads the
//! availability under a lock (or a conditional update) so two replicas never decide on the
//! same units, then applies one [`Movement::Reserve`](super::stock::Movement) per line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One requested line of an order (as carried by `order.placed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestedLine {
    pub sku: String,
    pub quantity: u64,
}

/// A SKU whose available stock does not cover the (merged) requested quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortage {
    pub sku: String,
    pub requested: u64,
    pub available: u64,
}

/// The outcome of [`decide_reservation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservationDecision {
    /// Reserve these quantities, one entry per distinct SKU, sorted by SKU.
    ReserveAll(Vec<RequestedLine>),
    /// Reserve nothing; every short SKU, sorted by SKU.
    Reject(Vec<Shortage>),
}

/// Sums the quantities of lines with the same SKU (saturating: a sum above `u64::MAX` cannot
/// be available anyway) and drops zero quantities. The result is sorted by SKU, which is also
/// the order in which a caller should lock stock rows to avoid deadlocks.
pub fn merge_lines(lines: &[RequestedLine]) -> Vec<RequestedLine> {
    let mut merged: BTreeMap<&str, u64> = BTreeMap::new();
    for line in lines.iter().filter(|l| l.quantity > 0) {
        let q = merged.entry(&line.sku).or_insert(0);
        *q = q.saturating_add(line.quantity);
    }
    merged
        .into_iter()
        .map(|(sku, quantity)| RequestedLine {
            sku: sku.to_owned(),
            quantity,
        })
        .collect()
}

/// Decides whether `lines` can all be reserved. `available(sku)` returns the units available
/// for a SKU (0 for an unknown SKU). Duplicate SKUs are merged first, so two lines of 3 units
/// need 6 available.
pub fn decide_reservation(
    lines: &[RequestedLine],
    available: impl Fn(&str) -> u64,
) -> ReservationDecision {
    let merged = merge_lines(lines);
    let shortages: Vec<Shortage> = merged
        .iter()
        .filter_map(|line| {
            let have = available(&line.sku);
            (have < line.quantity).then(|| Shortage {
                sku: line.sku.clone(),
                requested: line.quantity,
                available: have,
            })
        })
        .collect();
    if shortages.is_empty() {
        ReservationDecision::ReserveAll(merged)
    } else {
        ReservationDecision::Reject(shortages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn l(sku: &str, quantity: u64) -> RequestedLine {
        RequestedLine {
            sku: sku.into(),
            quantity,
        }
    }

    fn stock(entries: &[(&str, u64)]) -> HashMap<String, u64> {
        entries.iter().map(|(s, q)| (s.to_string(), *q)).collect()
    }

    fn decide(lines: &[RequestedLine], stock: &HashMap<String, u64>) -> ReservationDecision {
        decide_reservation(lines, |sku| stock.get(sku).copied().unwrap_or(0))
    }

    #[test]
    fn reserves_everything_when_every_line_is_covered() {
        let s = stock(&[("A", 5), ("B", 1)]);
        assert_eq!(
            decide(&[l("B", 1), l("A", 5)], &s),
            ReservationDecision::ReserveAll(vec![l("A", 5), l("B", 1)])
        );
    }

    #[test]
    fn rejects_with_every_shortage_including_unknown_skus() {
        let s = stock(&[("A", 5), ("B", 1)]);
        assert_eq!(
            decide(&[l("A", 6), l("B", 1), l("Z", 2)], &s),
            ReservationDecision::Reject(vec![
                Shortage {
                    sku: "A".into(),
                    requested: 6,
                    available: 5
                },
                Shortage {
                    sku: "Z".into(),
                    requested: 2,
                    available: 0
                },
            ])
        );
    }

    #[test]
    fn duplicate_skus_are_merged_before_deciding() {
        let s = stock(&[("A", 5)]);
        assert_eq!(
            decide(&[l("A", 3), l("A", 3)], &s),
            ReservationDecision::Reject(vec![Shortage {
                sku: "A".into(),
                requested: 6,
                available: 5
            }])
        );
        assert_eq!(
            decide(&[l("A", 2), l("A", 3)], &s),
            ReservationDecision::ReserveAll(vec![l("A", 5)])
        );
    }

    #[test]
    fn merge_saturates_and_drops_zero_lines() {
        assert_eq!(
            merge_lines(&[l("A", u64::MAX), l("A", 1), l("B", 0)]),
            vec![l("A", u64::MAX)]
        );
    }

    proptest! {
        /// All or nothing: a ReserveAll covers every requested unit within availability; a Reject
        /// lists exactly the SKUs whose merged request exceeds availability.
        #[test]
        fn all_or_nothing(
            lines in proptest::collection::vec(("[A-D]", 0u64..10).prop_map(|(s, q)| l(&s, q)), 0..8),
            avail in proptest::collection::hash_map("[A-D]", 0u64..15, 0..4),
        ) {
            let mut want: HashMap<String, u64> = HashMap::new();
            for line in &lines {
                *want.entry(line.sku.clone()).or_default() += line.quantity;
            }
            want.retain(|_, q| *q > 0);
            let short: Vec<&String> = {
                let mut v: Vec<_> = want.iter().filter(|(s, q)| avail.get(*s).copied().unwrap_or(0) < **q).map(|(s, _)| s).collect();
                v.sort();
                v
            };
            match decide(&lines, &avail) {
                ReservationDecision::ReserveAll(reserve) => {
                    prop_assert!(short.is_empty());
                    prop_assert_eq!(reserve.len(), want.len());
                    for r in reserve {
                        prop_assert_eq!(Some(&r.quantity), want.get(&r.sku));
                        prop_assert!(r.quantity <= avail.get(&r.sku).copied().unwrap_or(0));
                    }
                }
                ReservationDecision::Reject(shortages) => {
                    let skus: Vec<&String> = shortages.iter().map(|s| &s.sku).collect();
                    prop_assert_eq!(skus, short);
                    for s in shortages {
                        prop_assert_eq!(s.requested, want[&s.sku]);
                        prop_assert!(s.available < s.requested);
                    }
                }
            }
        }
    }
}
