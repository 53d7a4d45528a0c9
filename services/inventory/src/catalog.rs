//! The inventory side of the demo catalog (`jetmart-demo-catalog`): how `seed-demo` records
//! its adjustments.

pub use jetmart_demo_catalog::{DEMO_CATALOG, DEMO_CURRENCY, DemoItem, demo_item};

/// Reason of the seeding adjustments in the ledger.
pub const SEED_REASON: &str = "seed-demo: initial stock";

/// Idempotency key of the seeding adjustment of `sku`: running seed-demo again finds it and
/// adds nothing.
pub fn seed_idempotency_key(sku: &str) -> String {
    format!("seed-demo:{sku}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MAX_REASON_LEN;
    use crate::store::valid_sku;

    #[test]
    fn demo_skus_and_seed_reason_are_valid_here() {
        assert!(DEMO_CATALOG.iter().all(|item| valid_sku(item.sku)));
        assert!(SEED_REASON.len() <= MAX_REASON_LEN);
    }
}
