//! Reads one consistent snapshot of the current generation.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use jetmart_proto::order::v1::CancelReason;
use redis::aio::ConnectionManager;

use crate::domain::{
    self, Amount, CurrencyRevenue, Funnel, MinuteBucket, NotificationTotals, OrderTotals,
    ReasonCount, SkuSales, Snapshot, SurveyStats,
};
use crate::generation;
use crate::keys::{Keyspace, field};

/// What to include: window length and number of top SKUs (already validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub series_minutes: u32,
    pub top_skus: u32,
}

impl Default for Query {
    fn default() -> Self {
        Self {
            series_minutes: domain::DEFAULT_SERIES_MINUTES,
            top_skus: domain::DEFAULT_TOP_SKUS,
        }
    }
}

/// The current generation's snapshot. If a rebuild swaps generations while it is read, it is
/// read again from the new one, so it never mixes two generations.
pub async fn snapshot(
    conn: &ConnectionManager,
    query: Query,
    now: DateTime<Utc>,
) -> redis::RedisResult<Snapshot> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let Some(keys) = generation::peek(conn).await? else {
            return Ok(empty(query, now));
        };
        let snapshot = read(conn, keys, query, now).await?;
        if attempts >= 3 || generation::peek(conn).await? == Some(keys) {
            return Ok(snapshot);
        }
    }
}

fn empty(query: Query, now: DateTime<Utc>) -> Snapshot {
    Snapshot {
        generation: 0,
        revision: 0,
        orders: OrderTotals::default(),
        series: domain::window(now, query.series_minutes)
            .into_iter()
            .map(|start| MinuteBucket {
                start,
                placed: 0,
                confirmed: 0,
                cancelled: 0,
                revenue: Vec::new(),
            })
            .collect(),
        revenue: Vec::new(),
        top_skus: Vec::new(),
        low_stock: Vec::new(),
        surveys: SurveyStats::default(),
        funnel: Funnel::default(),
        notifications: NotificationTotals::default(),
    }
}

async fn read(
    conn: &ConnectionManager,
    keys: Keyspace,
    query: Query,
    now: DateTime<Utc>,
) -> redis::RedisResult<Snapshot> {
    let mut conn = conn.clone();
    let minutes = domain::window(now, query.series_minutes);
    let mut pipe = redis::pipe();
    pipe.hgetall(keys.totals());
    for start in &minutes {
        pipe.hgetall(keys.minute(*start));
    }
    pipe.zrevrange_withscores(keys.sku_units(), 0, query.top_skus as isize - 1)
        .smembers(keys.low_skus());
    let mut replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
    let low_skus: Vec<String> =
        redis::from_redis_value(replies.pop().unwrap_or(redis::Value::Nil))?;
    let top: Vec<(String, f64)> =
        redis::from_redis_value(replies.pop().unwrap_or(redis::Value::Nil))?;
    let mut hashes = replies
        .into_iter()
        .map(redis::from_redis_value::<HashMap<String, String>>)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter();
    let totals = Counters(hashes.next().unwrap_or_default());
    let series = minutes
        .iter()
        .zip(hashes)
        .map(|(start, h)| minute_bucket(*start, &Counters(h)))
        .collect();

    let mut pipe = redis::pipe();
    let skus: Vec<&str> = top.iter().map(|(s, _)| s.as_str()).collect();
    if !skus.is_empty() {
        pipe.cmd("HMGET").arg(keys.sku_orders()).arg(&skus);
    }
    for sku in &low_skus {
        pipe.cmd("HGETALL").arg(keys.stock(sku));
    }
    let mut replies: Vec<redis::Value> = if skus.is_empty() && low_skus.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(&mut conn).await?
    };
    let sku_orders: Vec<Option<i64>> = if skus.is_empty() {
        Vec::new()
    } else {
        redis::from_redis_value(replies.remove(0))?
    };
    let mut top_skus: Vec<SkuSales> = top
        .iter()
        .zip(sku_orders)
        .map(|((sku, units), orders)| SkuSales {
            sku: sku.clone(),
            units: *units as i64,
            orders: orders.unwrap_or(0),
        })
        .collect();
    top_skus.sort_by(|a, b| b.units.cmp(&a.units).then_with(|| a.sku.cmp(&b.sku)));
    let mut low_stock = Vec::new();
    for (sku, reply) in low_skus.iter().zip(replies) {
        let reports: HashMap<String, String> = redis::from_redis_value(reply)?;
        let reports: Vec<(String, String)> = reports.into_iter().collect();
        if let Some(low) = domain::low_stock_state(sku, &reports) {
            low_stock.push(low);
        }
    }
    low_stock.sort_by(|a, b| {
        a.available
            .cmp(&b.available)
            .then_with(|| a.sku.cmp(&b.sku))
    });
    Ok(from_totals(keys, &totals, series, top_skus, low_stock))
}

/// A hash of integer counters; missing or malformed fields count 0.
struct Counters(HashMap<String, String>);

impl Counters {
    fn get(&self, field: &str) -> i64 {
        self.0.get(field).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// `(suffix, value)` of every field starting with `prefix`, sorted by suffix.
    fn with_prefix(&self, prefix: &str) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = self
            .0
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_owned(), v.parse().ok()?)))
            .collect();
        out.sort();
        out
    }
}

fn minute_bucket(start: i64, h: &Counters) -> MinuteBucket {
    MinuteBucket {
        start,
        placed: h.get(field::MINUTE_PLACED),
        confirmed: h.get(field::MINUTE_CONFIRMED),
        cancelled: h.get(field::MINUTE_CANCELLED),
        revenue: h
            .with_prefix(field::MINUTE_REVENUE_PREFIX)
            .into_iter()
            .map(|(currency, amount_minor)| Amount {
                currency,
                amount_minor,
            })
            .collect(),
    }
}

fn from_totals(
    keys: Keyspace,
    t: &Counters,
    series: Vec<MinuteBucket>,
    top_skus: Vec<SkuSales>,
    low_stock: Vec<domain::LowStockSku>,
) -> Snapshot {
    let (placed, confirmed, cancelled) = (
        t.get(field::PLACED),
        t.get(field::CONFIRMED),
        t.get(field::CANCELLED),
    );
    let mut cancelled_by_reason: Vec<ReasonCount> = t
        .with_prefix(field::CANCEL_PREFIX)
        .into_iter()
        .map(|(name, count)| {
            let code = CancelReason::from_str_name(&name)
                .map(|r| r as i32)
                .or_else(|| name.parse().ok())
                .unwrap_or_default();
            ReasonCount {
                code,
                reason: name,
                count,
            }
        })
        .collect();
    cancelled_by_reason.sort_by_key(|r| r.code);
    let orders_by_currency: HashMap<String, i64> = t
        .with_prefix(field::REVENUE_ORDERS_PREFIX)
        .into_iter()
        .collect();
    let revenue = t
        .with_prefix(field::REVENUE_PREFIX)
        .into_iter()
        .map(|(currency, sum)| {
            let n = orders_by_currency.get(&currency).copied().unwrap_or(0);
            CurrencyRevenue {
                currency,
                confirmed_orders: n,
                revenue_minor: sum,
                average_order_value_minor: domain::average(sum, n),
            }
        })
        .collect();
    let (promoters, detractors, completed) = (
        t.get(field::SURVEY_PROMOTERS),
        t.get(field::SURVEY_DETRACTORS),
        t.get(field::SURVEY_COMPLETED),
    );
    Snapshot {
        generation: keys.generation(),
        revision: t.get(field::REVISION),
        orders: OrderTotals {
            placed,
            confirmed,
            cancelled,
            pending: placed - confirmed - cancelled,
            cancelled_by_reason,
        },
        series,
        revenue,
        top_skus,
        low_stock,
        surveys: SurveyStats {
            requested: t.get(field::SURVEY_REQUESTED),
            completed,
            promoters,
            passives: t.get(field::SURVEY_PASSIVES),
            detractors,
            nps: domain::nps(promoters, detractors, completed),
        },
        funnel: Funnel {
            placed: t.get(field::FUNNEL_PLACED),
            stock_reserved: t.get(field::FUNNEL_STOCK_RESERVED),
            stock_rejected: t.get(field::FUNNEL_STOCK_REJECTED),
            payment_authorized: t.get(field::FUNNEL_PAYMENT_AUTHORIZED),
            payment_declined: t.get(field::FUNNEL_PAYMENT_DECLINED),
            confirmed: t.get(field::FUNNEL_CONFIRMED),
            payment_captured: t.get(field::FUNNEL_PAYMENT_CAPTURED),
            survey_requested: t.get(field::FUNNEL_SURVEY_REQUESTED),
            survey_completed: t.get(field::FUNNEL_SURVEY_COMPLETED),
        },
        notifications: NotificationTotals {
            sent: t.get(field::NOTIFICATIONS_SENT),
            failed: t.get(field::NOTIFICATIONS_FAILED),
            failed_permanent: t.get(field::NOTIFICATIONS_FAILED_PERMANENT),
        },
    }
}
