//! `jetmart-inventory seed-demo`: creates the demo catalog's SKUs with their initial stock.
//! Each SKU's stock is one adjustment (reason [`SEED_REASON`]) under the idempotency key
//! [`seed_idempotency_key`], so running it again changes nothing and the ledger explains
//! every unit.

use sqlx::PgPool;

use crate::adjust::{self, AdjustRequest};
use crate::cache::StockCache;
use crate::catalog::{DEMO_CATALOG, DemoItem, SEED_REASON, seed_idempotency_key};
use crate::error::ApiError;

/// What seeding did for one SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeded {
    pub item: DemoItem,
    /// Units added now (0 when an earlier run had seeded it).
    pub added: i64,
    /// Available units after this run.
    pub available: i64,
    pub low_stock_threshold: i64,
}

impl std::fmt::Display for Seeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.added > 0 {
            format!("seeded +{}", self.added)
        } else {
            "already seeded".into()
        };
        write!(
            f,
            "{:<9} {:<26} {:>8} {:<16} available {:>6}, low below {}",
            self.item.sku,
            self.item.name,
            format!(
                "{}.{:02}",
                self.item.unit_price_minor / 100,
                self.item.unit_price_minor % 100
            ),
            what,
            self.available,
            self.low_stock_threshold
        )
    }
}

/// Seeds every demo SKU; refreshes the cache entries when a cache is given (best effort).
pub async fn seed_demo(pool: &PgPool, cache: Option<&StockCache>) -> Result<Vec<Seeded>, ApiError> {
    let mut out = Vec::with_capacity(DEMO_CATALOG.len());
    for item in DEMO_CATALOG {
        let req = AdjustRequest {
            sku: item.sku.into(),
            delta: item.initial_stock,
            reason: SEED_REASON.into(),
            idempotency_key: seed_idempotency_key(item.sku),
            new_sku_threshold: item.low_stock_threshold,
            correlation_id: None,
        };
        let outcome = adjust::adjust_stock(pool, &req).await?;
        if let Some(cache) = cache {
            cache.refresh(std::slice::from_ref(&outcome.stock)).await;
        }
        let stock = outcome.stock.to_proto();
        out.push(Seeded {
            item: *item,
            added: if outcome.applied {
                item.initial_stock
            } else {
                0
            },
            available: stock.available,
            low_stock_threshold: stock.low_stock_threshold,
        });
    }
    Ok(out)
}
