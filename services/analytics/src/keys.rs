//! The Redis key layout. Everything analytics writes lives under [`ROOT`]:
//!
//! ```text
//! analytics:v1:current                     generation GetDashboard reads and live consumers write
//! analytics:v1:generations                 counter handing out generation numbers
//! analytics:v1:rebuild-lock                held by the one rebuild running (SET NX EX)
//! analytics:v1:g<N>:seen:<consumer>:<id>   exactly-once marker of an event (TTL)
//! analytics:v1:g<N>:totals                 hash of every total (fields below) and the revision
//! analytics:v1:g<N>:minute:<unix-secs>     hash per minute of event time: placed, confirmed,
//!                                          cancelled, revenue:<CUR>
//! analytics:v1:g<N>:sku-units              sorted set: SKU -> units in confirmed orders
//! analytics:v1:g<N>:sku-orders             hash: SKU -> confirmed orders containing it
//! analytics:v1:g<N>:low-skus               set of SKUs ever reported low
//! analytics:v1:g<N>:stock:<sku>            hash: one field per inventory.low / inventory.adjusted
//!                                          report, keyed by event time (see `domain::StockReport`)
//! ```
//!
//! A generation is a complete read model; a rebuild fills a new one and swaps the pointer.

/// Prefix of every analytics key.
pub const ROOT: &str = "analytics:v1";
/// The current generation (a decimal number).
pub const CURRENT: &str = "analytics:v1:current";
/// Allocates generation numbers (INCR).
pub const GENERATIONS: &str = "analytics:v1:generations";
/// Mutual exclusion between rebuilds.
pub const REBUILD_LOCK: &str = "analytics:v1:rebuild-lock";
/// Matches the keys of every generation (for sweeping old ones).
pub const ALL_GENERATIONS: &str = "analytics:v1:g*";

/// Fields of the `totals` hash.
pub mod field {
    pub const REVISION: &str = "revision";
    pub const PLACED: &str = "orders:placed";
    pub const CONFIRMED: &str = "orders:confirmed";
    pub const CANCELLED: &str = "orders:cancelled";
    /// `cancel:<CancelReason name or number>`.
    pub const CANCEL_PREFIX: &str = "cancel:";
    /// `revenue:<CUR>`: sum of confirmed totals in minor units.
    pub const REVENUE_PREFIX: &str = "revenue:";
    /// `revenue-orders:<CUR>`: confirmed orders in that currency.
    pub const REVENUE_ORDERS_PREFIX: &str = "revenue-orders:";
    pub const FUNNEL_PLACED: &str = "funnel:placed";
    pub const FUNNEL_STOCK_RESERVED: &str = "funnel:stock_reserved";
    pub const FUNNEL_STOCK_REJECTED: &str = "funnel:stock_rejected";
    pub const FUNNEL_PAYMENT_AUTHORIZED: &str = "funnel:payment_authorized";
    pub const FUNNEL_PAYMENT_DECLINED: &str = "funnel:payment_declined";
    pub const FUNNEL_CONFIRMED: &str = "funnel:confirmed";
    pub const FUNNEL_PAYMENT_CAPTURED: &str = "funnel:payment_captured";
    pub const FUNNEL_SURVEY_REQUESTED: &str = "funnel:survey_requested";
    pub const FUNNEL_SURVEY_COMPLETED: &str = "funnel:survey_completed";
    pub const SURVEY_REQUESTED: &str = "survey:requested";
    pub const SURVEY_COMPLETED: &str = "survey:completed";
    pub const SURVEY_PROMOTERS: &str = "survey:promoters";
    pub const SURVEY_PASSIVES: &str = "survey:passives";
    pub const SURVEY_DETRACTORS: &str = "survey:detractors";
    pub const NOTIFICATIONS_SENT: &str = "notifications:sent";
    pub const NOTIFICATIONS_FAILED: &str = "notifications:failed";
    pub const NOTIFICATIONS_FAILED_PERMANENT: &str = "notifications:failed_permanent";

    /// Fields of a `minute:<secs>` hash.
    pub const MINUTE_PLACED: &str = "placed";
    pub const MINUTE_CONFIRMED: &str = "confirmed";
    pub const MINUTE_CANCELLED: &str = "cancelled";
    pub const MINUTE_REVENUE_PREFIX: &str = "revenue:";
}

/// The keys of one generation of the read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Keyspace {
    generation: u64,
}

impl Keyspace {
    pub fn new(generation: u64) -> Self {
        Self { generation }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// `analytics:v1:g<N>:`
    pub fn prefix(&self) -> String {
        format!("{ROOT}:g{}:", self.generation)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix())
    }

    pub fn marker(&self, consumer: &str, event_id: &uuid::Uuid) -> String {
        self.key(&format!("seen:{consumer}:{event_id}"))
    }

    pub fn totals(&self) -> String {
        self.key("totals")
    }

    /// The bucket of the minute starting at `start` (unix seconds, a multiple of 60).
    pub fn minute(&self, start: i64) -> String {
        self.key(&format!("minute:{start}"))
    }

    pub fn sku_units(&self) -> String {
        self.key("sku-units")
    }

    pub fn sku_orders(&self) -> String {
        self.key("sku-orders")
    }

    pub fn low_skus(&self) -> String {
        self.key("low-skus")
    }

    pub fn stock(&self, sku: &str) -> String {
        self.key(&format!("stock:{sku}"))
    }
}

/// The generation a key belongs to, if it is a generation key (`analytics:v1:g<N>:...`).
pub fn generation_of(key: &str) -> Option<u64> {
    let rest = key.strip_prefix(ROOT)?.strip_prefix(":g")?;
    let (number, _) = rest.split_once(':')?;
    number.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_generation_is_under_its_prefix() {
        let ks = Keyspace::new(7);
        let id = uuid::Uuid::nil();
        for key in [
            ks.marker("analytics", &id),
            ks.totals(),
            ks.minute(120),
            ks.sku_units(),
            ks.sku_orders(),
            ks.low_skus(),
            ks.stock("SKU:1"),
        ] {
            assert!(key.starts_with("analytics:v1:g7:"), "{key}");
            assert_eq!(generation_of(&key), Some(7), "{key}");
        }
        assert_eq!(generation_of(CURRENT), None);
        assert_eq!(generation_of(GENERATIONS), None);
        assert_eq!(generation_of(REBUILD_LOCK), None);
        assert_eq!(generation_of("analytics:v1:gx:totals"), None);
    }
}
