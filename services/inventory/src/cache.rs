//! The Redis availability cache. Never the source of truth:
//!
//! - written after a commit with the values read back from Postgres, through a script that
//!   only replaces an entry with a newer row version, so two replicas refreshing the same SKU
//!   in either order leave the newest one;
//! - read through on a miss (after FLUSHALL or a Redis restart the first read repopulates it);
//! - every entry has a TTL, the backstop that bounds how long a stale entry (a write lost while
//!   Redis was away) can be served;
//! - every Redis failure degrades to Postgres: callers log it and go on.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use redis::aio::ConnectionManager;

use crate::domain::StockLevel;
use crate::store::{StockRow, as_i64};

/// Key of a SKU's entry.
pub fn key(sku: &str) -> String {
    format!("jetmart:inventory:stock:{sku}")
}

/// Replace only with a newer (or the same) version, then (re)arm the TTL.
const PUT: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'v')
if cur and tonumber(cur) > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'a', ARGV[2], 'r', ARGV[3], 's', ARGV[4], 't', ARGV[5], 'u', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[7])
return 1
"#;

/// Cache counters, on the service's /metrics.
#[derive(Debug, Clone, Default)]
pub struct CacheMetrics {
    pub hits: Counter,
    pub misses: Counter,
    pub errors: Counter,
}

impl CacheMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "inventory_cache_hits",
            "GetStock answered from Redis",
            m.hits.clone(),
        );
        registry.register(
            "inventory_cache_misses",
            "GetStock read through to Postgres",
            m.misses.clone(),
        );
        registry.register(
            "inventory_cache_errors",
            "Redis calls that failed (Postgres answered)",
            m.errors.clone(),
        );
        m
    }
}

#[derive(Clone)]
pub struct StockCache {
    conn: ConnectionManager,
    ttl: Duration,
    put: redis::Script,
    pub metrics: CacheMetrics,
}

impl std::fmt::Debug for StockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StockCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl StockCache {
    /// A cache on `url`. Connects lazily and reconnects on its own, so the service starts (and
    /// answers from Postgres) while Redis is away. Calls time out quickly for the same reason.
    pub fn connect(url: &str, ttl: Duration, metrics: CacheMetrics) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            ttl,
            put: redis::Script::new(PUT),
            metrics,
        })
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The cached row of `sku`, if any (a malformed entry counts as a miss).
    pub async fn get(&self, sku: &str) -> redis::RedisResult<Option<StockRow>> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key(sku))
            .query_async(&mut conn)
            .await?;
        Ok(decode(sku, &fields))
    }

    /// Stores `row` unless a newer version is cached. Returns whether it was written.
    pub async fn put(&self, row: &StockRow) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let written: i64 = self
            .put
            .key(key(&row.sku))
            .arg(row.version)
            .arg(as_i64(row.level.available))
            .arg(as_i64(row.level.reserved))
            .arg(as_i64(row.level.sold))
            .arg(as_i64(row.low_stock_threshold))
            .arg(row.updated_at.timestamp_micros())
            .arg(self.ttl.as_secs().max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok(written == 1)
    }

    /// Writes every row after a commit; a failure is logged and counted, never returned: the
    /// database has the truth and the TTL bounds the staleness.
    pub async fn refresh(&self, rows: &[StockRow]) {
        for row in rows {
            if let Err(e) = self.put(row).await {
                self.metrics.errors.inc();
                tracing::warn!(sku = %row.sku, error = %e, "cache refresh failed");
            }
        }
    }
}

fn decode(sku: &str, fields: &HashMap<String, String>) -> Option<StockRow> {
    let num = |name: &str| fields.get(name)?.parse::<i64>().ok();
    let unsigned = |name: &str| u64::try_from(num(name)?).ok();
    Some(StockRow {
        sku: sku.to_owned(),
        level: StockLevel {
            available: unsigned("a")?,
            reserved: unsigned("r")?,
            sold: unsigned("s")?,
        },
        low_stock_threshold: unsigned("t")?,
        version: num("v")?,
        updated_at: DateTime::<Utc>::from_timestamp_micros(num("u")?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_reads_complete_entries_only() {
        let mut f: HashMap<String, String> = [
            ("v", "3"),
            ("a", "7"),
            ("r", "2"),
            ("s", "1"),
            ("t", "5"),
            ("u", "1700000000000000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let row = decode("SKU-1", &f).unwrap();
        assert_eq!(
            row.level,
            StockLevel {
                available: 7,
                reserved: 2,
                sold: 1
            }
        );
        assert_eq!((row.version, row.low_stock_threshold), (3, 5));
        f.insert("a".into(), "-1".into());
        assert!(decode("SKU-1", &f).is_none());
        f.remove("a");
        assert!(decode("SKU-1", &f).is_none());
        assert!(decode("SKU-1", &HashMap::new()).is_none());
    }
}
