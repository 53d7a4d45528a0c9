//! The demo catalog: the SKUs `jetmart-inventory seed-demo` creates, with the names and prices
//! the load generator, the operator CLI, the benchmarks and the tests place orders with. The one
//! place it is defined; a tool depends on this crate, not on the inventory service.
//!
//! Stock levels are mixed on purpose: most SKUs are deep, a few are scarce so that load runs
//! also exercise out-of-stock rejections and `inventory.low`.

/// Currency of every demo price.
pub const DEMO_CURRENCY: &str = "USD";

/// One demo product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoItem {
    pub sku: &'static str,
    pub name: &'static str,
    /// Price of one unit in minor units of [`DEMO_CURRENCY`].
    pub unit_price_minor: i64,
    /// Units `jetmart-inventory seed-demo` makes available.
    pub initial_stock: i64,
    pub low_stock_threshold: i64,
}

const fn item(
    sku: &'static str,
    name: &'static str,
    unit_price_minor: i64,
    initial_stock: i64,
    low_stock_threshold: i64,
) -> DemoItem {
    DemoItem {
        sku,
        name,
        unit_price_minor,
        initial_stock,
        low_stock_threshold,
    }
}

/// The 20 demo SKUs, `SKU-0001` to `SKU-0020`, sorted by SKU.
pub const DEMO_CATALOG: &[DemoItem] = &[
    item("SKU-0001", "Espresso beans 1 kg", 2_450, 10_000, 100),
    item("SKU-0002", "Filter coffee 500 g", 1_290, 10_000, 100),
    item("SKU-0003", "Ceramic mug", 1_500, 5_000, 50),
    item("SKU-0004", "Travel tumbler", 2_900, 5_000, 50),
    item("SKU-0005", "Pour-over dripper", 3_400, 2_000, 20),
    item("SKU-0006", "Paper filters x100", 690, 20_000, 200),
    item("SKU-0007", "Burr grinder", 12_900, 1_000, 10),
    item("SKU-0008", "Gooseneck kettle", 8_900, 1_000, 10),
    item("SKU-0009", "Milk frother", 4_900, 2_000, 20),
    item("SKU-0010", "Digital scale", 3_900, 2_000, 20),
    item("SKU-0011", "Green tea 100 g", 990, 8_000, 80),
    item("SKU-0012", "Chai spice mix", 790, 8_000, 80),
    item("SKU-0013", "Cocoa powder", 890, 8_000, 80),
    item("SKU-0014", "Oat milk 1 l", 299, 20_000, 200),
    item("SKU-0015", "Barista apron", 3_200, 500, 10),
    item("SKU-0016", "Cold brew bottle", 2_400, 500, 10),
    // Scarce on purpose.
    item("SKU-0017", "Espresso machine", 49_900, 50, 10),
    item("SKU-0018", "Limited edition grinder", 29_900, 10, 3),
    item("SKU-0019", "Signed latte art book", 4_500, 3, 1),
    item("SKU-0020", "Vintage roaster", 99_900, 1, 1),
];

/// The demo item with this SKU.
pub fn demo_item(sku: &str) -> Option<&'static DemoItem> {
    DEMO_CATALOG.iter().find(|i| i.sku == sku)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_sorted_unique_and_plausible() {
        assert_eq!(DEMO_CATALOG.len(), 20);
        for (n, pair) in DEMO_CATALOG.windows(2).enumerate() {
            assert!(pair[0].sku < pair[1].sku, "not sorted at {n}");
        }
        for (n, item) in DEMO_CATALOG.iter().enumerate() {
            assert_eq!(item.sku, format!("SKU-{:04}", n + 1));
            assert!(item.unit_price_minor > 0 && item.initial_stock > 0);
            assert!((0..=item.initial_stock).contains(&item.low_stock_threshold));
        }
        assert_eq!(demo_item("SKU-0020").unwrap().initial_stock, 1);
        assert!(demo_item("SKU-9999").is_none());
    }
}
