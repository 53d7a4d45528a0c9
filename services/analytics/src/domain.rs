//! Pure rules of the read model: minute buckets, NPS, averages, the low-stock state of a SKU
//! from its reports, and the snapshot every API serves.
//!
//! Every effect analytics applies commutes (counter increments, and hash fields unique per
//! event), so the read model is the same whatever order events are applied in: across lanes,
//! replicas, redeliveries and the concurrent replay of a rebuild.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

pub const DEFAULT_SERIES_MINUTES: u32 = 60;
pub const MAX_SERIES_MINUTES: u32 = 1440;
pub const DEFAULT_TOP_SKUS: u32 = 10;
pub const MAX_TOP_SKUS: u32 = 100;

/// Start (unix seconds) of the minute `t` falls in. Buckets follow the event's `ce-time`, never
/// the wall clock, so a replay puts every event in the bucket it was first counted in.
pub fn minute_start(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60) * 60
}

/// The `n` minute starts ending with the minute of `now`, oldest first.
pub fn window(now: DateTime<Utc>, minutes: u32) -> Vec<i64> {
    let last = minute_start(now);
    (0..i64::from(minutes))
        .rev()
        .map(|back| last - back * 60)
        .collect()
}

/// Why an order event is not one the order service could have published, or None. The order
/// service refuses any order breaking these rules before it emits anything, so an event that
/// breaks them was never accepted by its owner (a forged or corrupted message, which inventory
/// dead-letters too) and must not count: otherwise the dashboard shows an order the order
/// service does not have, pending forever.
pub fn order_refusal(
    order_id: &str,
    lines: &[jetmart_proto::common::v1::OrderLine],
    total: Option<&jetmart_proto::common::v1::Money>,
) -> Option<String> {
    if uuid::Uuid::try_parse(order_id).is_err() {
        return Some(format!("order id {order_id:?} is not a UUID"));
    }
    let Some(total) = total else {
        return Some("no total".into());
    };
    if jetmart_currency::Currency::from_code(&total.currency).is_none() {
        return Some(format!("currency {:?} is not accepted", total.currency));
    }
    if total.amount_minor < 0 {
        return Some(format!("total {} is negative", total.amount_minor));
    }
    if lines.is_empty() {
        return Some("no lines".into());
    }
    for (i, line) in lines.iter().enumerate() {
        if line.sku.is_empty() {
            return Some(format!("lines[{i}] has no SKU"));
        }
        if line.quantity <= 0 {
            return Some(format!(
                "lines[{i}] quantity {} is not positive",
                line.quantity
            ));
        }
        if let Some(price) = &line.unit_price
            && (price.currency != total.currency || price.amount_minor < 0)
        {
            return Some(format!(
                "lines[{i}] price {} {} does not fit the total's currency {}",
                price.amount_minor, price.currency, total.currency
            ));
        }
    }
    None
}

/// How an NPS answer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpsClass {
    Promoter,
    Passive,
    Detractor,
}

/// 9-10 promoter, 7-8 passive, 0-6 detractor; None outside 0..=10.
pub fn classify(score: i32) -> Option<NpsClass> {
    match score {
        9..=10 => Some(NpsClass::Promoter),
        7..=8 => Some(NpsClass::Passive),
        0..=6 => Some(NpsClass::Detractor),
        _ => None,
    }
}

/// (promoters - detractors) * 100 / completed; 0 when nothing was answered.
pub fn nps(promoters: i64, detractors: i64, completed: i64) -> f64 {
    if completed <= 0 {
        return 0.0;
    }
    (promoters - detractors) as f64 * 100.0 / completed as f64
}

/// sum / count rounded down; 0 for no orders.
pub fn average(sum: i64, count: i64) -> i64 {
    if count <= 0 { 0 } else { sum.div_euclid(count) }
}

/// One stock report about a SKU, stored as a field of its `stock:<sku>` hash. The field name
/// sorts by event time (then event id, to keep two reports of one instant apart), so the latest
/// report wins whatever order they were applied in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockReport {
    /// inventory.low: available fell below threshold.
    Low {
        available: i64,
        threshold: i64,
        detected_at_ms: i64,
    },
    /// inventory.adjusted: an operator changed the stock; `available` after it.
    Adjusted { available: i64 },
}

impl StockReport {
    /// The hash field: zero-padded event time in microseconds, then the event id.
    pub fn field(time: DateTime<Utc>, event_id: &uuid::Uuid) -> String {
        // Offset so pre-1970 times still sort (and never produce a '-').
        let micros = i128::from(time.timestamp_micros()) + (1i128 << 62);
        format!("{micros:020}-{event_id}")
    }

    pub fn encode(&self) -> String {
        match self {
            StockReport::Low {
                available,
                threshold,
                detected_at_ms,
            } => format!("low:{available}:{threshold}:{detected_at_ms}"),
            StockReport::Adjusted { available } => format!("adj:{available}"),
        }
    }

    pub fn decode(value: &str) -> Option<Self> {
        let mut parts = value.split(':');
        let report = match parts.next()? {
            "low" => StockReport::Low {
                available: parts.next()?.parse().ok()?,
                threshold: parts.next()?.parse().ok()?,
                detected_at_ms: parts.next()?.parse().ok()?,
            },
            "adj" => StockReport::Adjusted {
                available: parts.next()?.parse().ok()?,
            },
            _ => return None,
        };
        parts.next().is_none().then_some(report)
    }

    fn available(&self) -> i64 {
        match self {
            StockReport::Low { available, .. } | StockReport::Adjusted { available } => *available,
        }
    }
}

/// Whether a SKU is low now, from all its reports `(field, encoded)`: the latest report gives
/// the available units, the latest low report the threshold and detection time. A later
/// adjustment to the threshold or above clears it; commits and releases carry no stock level,
/// so "available" is the last one reported.
pub fn low_stock_state(sku: &str, reports: &[(String, String)]) -> Option<LowStockSku> {
    let mut sorted: Vec<(&str, StockReport)> = reports
        .iter()
        .filter_map(|(f, v)| Some((f.as_str(), StockReport::decode(v)?)))
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let (_, latest) = sorted.last()?;
    let (threshold, detected_at_ms) = sorted.iter().rev().find_map(|(_, r)| match r {
        StockReport::Low {
            threshold,
            detected_at_ms,
            ..
        } => Some((*threshold, *detected_at_ms)),
        StockReport::Adjusted { .. } => None,
    })?;
    let available = latest.available();
    (available < threshold).then(|| LowStockSku {
        sku: sku.to_owned(),
        available,
        threshold,
        detected_at: millis_to_time(detected_at_ms),
    })
}

pub fn millis_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// An amount in minor units of one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Amount {
    pub currency: String,
    pub amount_minor: i64,
}

/// What the read model holds, as served by GetDashboard and `/api/dashboard`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub generation: u64,
    pub revision: i64,
    pub orders: OrderTotals,
    pub series: Vec<MinuteBucket>,
    pub revenue: Vec<CurrencyRevenue>,
    pub top_skus: Vec<SkuSales>,
    pub low_stock: Vec<LowStockSku>,
    pub surveys: SurveyStats,
    pub funnel: Funnel,
    pub notifications: NotificationTotals,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OrderTotals {
    pub placed: i64,
    pub confirmed: i64,
    pub cancelled: i64,
    /// placed - confirmed - cancelled.
    pub pending: i64,
    pub cancelled_by_reason: Vec<ReasonCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    /// `jetmart.order.v1.CancelReason` value.
    pub code: i32,
    /// Its proto name, e.g. `CANCEL_REASON_OUT_OF_STOCK`.
    pub reason: String,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MinuteBucket {
    /// Unix seconds of the minute's start.
    pub start: i64,
    pub placed: i64,
    pub confirmed: i64,
    pub cancelled: i64,
    pub revenue: Vec<Amount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrencyRevenue {
    pub currency: String,
    pub confirmed_orders: i64,
    pub revenue_minor: i64,
    pub average_order_value_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkuSales {
    pub sku: String,
    pub units: i64,
    pub orders: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LowStockSku {
    pub sku: String,
    pub available: i64,
    pub threshold: i64,
    pub detected_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SurveyStats {
    pub requested: i64,
    pub completed: i64,
    pub promoters: i64,
    pub passives: i64,
    pub detractors: i64,
    pub nps: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Funnel {
    pub placed: i64,
    pub stock_reserved: i64,
    pub stock_rejected: i64,
    pub payment_authorized: i64,
    pub payment_declined: i64,
    pub confirmed: i64,
    pub payment_captured: i64,
    pub survey_requested: i64,
    pub survey_completed: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NotificationTotals {
    pub sent: i64,
    pub failed: i64,
    pub failed_permanent: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn minutes_follow_event_time() {
        assert_eq!(minute_start(at("2026-03-01T10:15:59.999Z")) % 60, 0);
        assert_eq!(
            minute_start(at("2026-03-01T10:15:59.999Z")),
            minute_start(at("2026-03-01T10:15:00Z"))
        );
        assert_eq!(minute_start(at("1969-12-31T23:59:30Z")), -60);
        let w = window(at("2026-03-01T10:15:20Z"), 3);
        assert_eq!(w.len(), 3);
        assert_eq!(w[2], minute_start(at("2026-03-01T10:15:00Z")));
        assert_eq!(w[0], w[2] - 120);
    }

    #[test]
    fn only_orders_the_order_service_accepts_pass() {
        use jetmart_proto::common::v1::{Money, OrderLine};
        let eur = |amount_minor| Money {
            amount_minor,
            currency: "EUR".into(),
        };
        let line = |sku: &str, quantity, price| OrderLine {
            sku: sku.into(),
            quantity,
            unit_price: Some(price),
        };
        let id = uuid::Uuid::now_v7().to_string();
        let good = vec![line("SKU-1", 2, eur(500))];
        assert_eq!(order_refusal(&id, &good, Some(&eur(1000))), None);
        // The poison: every field wrong.
        let zzz = Money {
            amount_minor: 100,
            currency: "ZZZ".into(),
        };
        let poison = vec![line("SKU-1", -5, zzz.clone())];
        let why = order_refusal("not-a-uuid", &poison, Some(&zzz)).unwrap();
        assert!(why.contains("not-a-uuid"), "{why}");
        for (lines, total, expected) in [
            (poison.clone(), Some(zzz.clone()), "ZZZ"),
            (vec![line("SKU-1", -5, eur(1))], Some(eur(1)), "quantity -5"),
            (vec![line("SKU-1", 0, eur(1))], Some(eur(1)), "quantity 0"),
            (vec![line("", 1, eur(1))], Some(eur(1)), "no SKU"),
            (
                vec![line("SKU-1", 1, zzz.clone())],
                Some(eur(1)),
                "currency EUR",
            ),
            (vec![line("SKU-1", 1, eur(-1))], Some(eur(1)), "price -1"),
            (Vec::new(), Some(eur(1)), "no lines"),
            (good.clone(), Some(eur(-1)), "negative"),
            (good.clone(), None, "no total"),
        ] {
            let why = order_refusal(&id, &lines, total.as_ref()).unwrap();
            assert!(why.contains(expected), "{why} lacks {expected}");
        }
    }

    #[test]
    fn nps_and_average() {
        assert_eq!(classify(10), Some(NpsClass::Promoter));
        assert_eq!(classify(9), Some(NpsClass::Promoter));
        assert_eq!(classify(8), Some(NpsClass::Passive));
        assert_eq!(classify(6), Some(NpsClass::Detractor));
        assert_eq!(classify(0), Some(NpsClass::Detractor));
        assert_eq!(classify(11), None);
        assert_eq!(classify(-1), None);
        assert_eq!(nps(2, 1, 4), 25.0);
        assert_eq!(nps(0, 0, 0), 0.0);
        assert_eq!(nps(0, 3, 3), -100.0);
        assert_eq!(average(10, 3), 3);
        assert_eq!(average(10, 0), 0);
    }

    fn report(t: &str, r: &StockReport) -> (String, String) {
        (StockReport::field(at(t), &uuid::Uuid::now_v7()), r.encode())
    }

    #[test]
    fn low_until_adjusted_to_the_threshold() {
        let low = StockReport::Low {
            available: 2,
            threshold: 5,
            detected_at_ms: 1000,
        };
        let reports = vec![report("2026-01-01T00:00:00Z", &low)];
        let state = low_stock_state("A", &reports).unwrap();
        assert_eq!((state.available, state.threshold), (2, 5));
        assert_eq!(state.detected_at.timestamp_millis(), 1000);

        let mut still_low = reports.clone();
        still_low.push(report(
            "2026-01-01T00:01:00Z",
            &StockReport::Adjusted { available: 4 },
        ));
        assert_eq!(low_stock_state("A", &still_low).unwrap().available, 4);

        let mut restocked = still_low.clone();
        restocked.push(report(
            "2026-01-01T00:02:00Z",
            &StockReport::Adjusted { available: 5 },
        ));
        assert_eq!(low_stock_state("A", &restocked), None);

        // Applied out of order: an older adjustment does not clear a newer low report.
        let mut late = vec![report(
            "2025-12-31T00:00:00Z",
            &StockReport::Adjusted { available: 50 },
        )];
        late.extend(reports);
        assert!(low_stock_state("A", &late).is_some());

        // Adjustments alone never make a SKU low.
        let only_adjusted = vec![report(
            "2026-01-01T00:00:00Z",
            &StockReport::Adjusted { available: 0 },
        )];
        assert_eq!(low_stock_state("A", &only_adjusted), None);
    }

    #[test]
    fn stock_reports_round_trip_and_reject_garbage() {
        for r in [
            StockReport::Low {
                available: -1,
                threshold: 3,
                detected_at_ms: 42,
            },
            StockReport::Adjusted { available: 9 },
        ] {
            assert_eq!(StockReport::decode(&r.encode()), Some(r));
        }
        for bad in ["", "low:1:2", "adj:x", "adj:1:2", "other:1"] {
            assert_eq!(StockReport::decode(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn report_fields_sort_by_time(a in -1_000_000_000_000i64..4_000_000_000_000, b in -1_000_000_000_000i64..4_000_000_000_000) {
            let ta = Utc.timestamp_millis_opt(a).unwrap();
            let tb = Utc.timestamp_millis_opt(b).unwrap();
            let id = uuid::Uuid::nil();
            let (fa, fb) = (StockReport::field(ta, &id), StockReport::field(tb, &id));
            prop_assert_eq!(fa.cmp(&fb), a.cmp(&b));
        }
    }
}
