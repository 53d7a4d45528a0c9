//! From one event to the Redis writes that count it ([`Effects`]), computed from the event
//! alone. The runtime's [`RedisProcessor`](jetmart_runtime::redis_once::RedisProcessor) applies
//! them together with the event's marker in one script, so each event counts exactly once per
//! generation.

use std::collections::BTreeMap;

use jetmart_proto::inventory::v1::{
    StockAdjusted, StockCommitted, StockLow, StockRejected, StockReleased, StockReserved,
};
use jetmart_proto::notification::v1::{NotificationFailed, NotificationSent};
use jetmart_proto::order::v1::{CancelReason, OrderCancelled, OrderConfirmed, OrderPlaced};
use jetmart_proto::payment::v1::{
    PaymentAuthorized, PaymentCaptured, PaymentDeclined, PaymentVoided,
};
use jetmart_proto::survey::v1::{SurveyCompleted, SurveyRequested};
use jetmart_runtime::IncomingEvent;
use jetmart_runtime::consumer::HandlerError;
use jetmart_runtime::redis_once::{Effects, RedisHandler};

use crate::domain::{self, NpsClass, StockReport};
use crate::keys::{Keyspace, field};

/// Counts every event type of every context into one generation.
#[derive(Debug, Clone)]
pub struct AnalyticsHandler {
    keys: Keyspace,
}

impl AnalyticsHandler {
    pub fn new(keys: Keyspace) -> Self {
        Self { keys }
    }

    pub fn keys(&self) -> Keyspace {
        self.keys
    }

    /// Event types analytics counts: all of them.
    pub fn understands(event_type: &str) -> bool {
        jetmart_proto::EVENT_TYPES
            .iter()
            .any(|t| t.type_name == event_type)
    }
}

impl RedisHandler for AnalyticsHandler {
    fn handles(&self, event_type: &str) -> bool {
        Self::understands(event_type)
    }

    fn marker(&self, consumer: &str, event: &IncomingEvent) -> String {
        self.keys.marker(consumer, &event.meta.id)
    }

    fn effects(&self, event: &IncomingEvent) -> Result<Effects, HandlerError> {
        effects(&self.keys, event)
    }
}

/// The name a cancel reason is stored under: its proto name, or the number if unknown.
pub fn reason_field(reason: i32) -> String {
    let name = CancelReason::try_from(reason)
        .map(|r| r.as_str_name().to_owned())
        .unwrap_or_else(|_| reason.to_string());
    format!("{}{name}", field::CANCEL_PREFIX)
}

fn money_of(
    total: Option<&jetmart_proto::common::v1::Money>,
    what: &str,
) -> Result<(String, i64), HandlerError> {
    match total {
        Some(m) if !m.currency.is_empty() => Ok((m.currency.clone(), m.amount_minor)),
        _ => Err(HandlerError::permanent(format!(
            "{what} has no total with a currency"
        ))),
    }
}

/// A permanent failure (dead-lettered with the reason, counted nowhere) for an order event the
/// order service would never have published; see [`domain::order_refusal`].
fn refuse_unless_accepted(what: &str, refusal: Option<String>) -> Result<(), HandlerError> {
    match refusal {
        None => Ok(()),
        Some(why) => Err(HandlerError::permanent(format!(
            "{what} not counted: the order service accepts no such order ({why})"
        ))),
    }
}

/// The writes that count `event` in `keys`' generation.
pub fn effects(keys: &Keyspace, event: &IncomingEvent) -> Result<Effects, HandlerError> {
    let totals = keys.totals();
    let minute = keys.minute(domain::minute_start(event.meta.time));
    // Every applied event moves the revision, so pollers can skip unchanged snapshots.
    let fx = Effects::new().hincr_by(&totals, field::REVISION, 1);
    let count = |fx: Effects, f: &str| fx.hincr_by(&totals, f, 1);

    let fx = if event.is::<OrderPlaced>() {
        let e = event.decode::<OrderPlaced>()?;
        refuse_unless_accepted(
            "order.placed",
            domain::order_refusal(&e.order_id, &e.lines, e.total.as_ref()),
        )?;
        let fx = count(fx, field::PLACED);
        count(fx, field::FUNNEL_PLACED).hincr_by(&minute, field::MINUTE_PLACED, 1)
    } else if event.is::<OrderConfirmed>() {
        let e = event.decode::<OrderConfirmed>()?;
        refuse_unless_accepted(
            "order.confirmed",
            domain::order_refusal(&e.order_id, &e.lines, e.total.as_ref()),
        )?;
        let (currency, amount) = money_of(e.total.as_ref(), "order.confirmed")?;
        let mut fx = count(count(fx, field::CONFIRMED), field::FUNNEL_CONFIRMED)
            .hincr_by(&minute, field::MINUTE_CONFIRMED, 1)
            .hincr_by(
                &minute,
                &format!("{}{currency}", field::MINUTE_REVENUE_PREFIX),
                amount,
            )
            .hincr_by(
                &totals,
                &format!("{}{currency}", field::REVENUE_PREFIX),
                amount,
            )
            .hincr_by(
                &totals,
                &format!("{}{currency}", field::REVENUE_ORDERS_PREFIX),
                1,
            );
        // Units per SKU, each SKU once per order however many lines it is on.
        let mut units: BTreeMap<&str, i64> = BTreeMap::new();
        for line in &e.lines {
            *units.entry(line.sku.as_str()).or_default() += i64::from(line.quantity);
        }
        for (sku, n) in units {
            fx = fx
                .zincr_by(&keys.sku_units(), sku, n as f64)
                .hincr_by(&keys.sku_orders(), sku, 1);
        }
        fx
    } else if event.is::<OrderCancelled>() {
        let e = event.decode::<OrderCancelled>()?;
        if uuid::Uuid::try_parse(&e.order_id).is_err() {
            refuse_unless_accepted(
                "order.cancelled",
                Some(format!("order id {:?} is not a UUID", e.order_id)),
            )?;
        }
        count(count(fx, field::CANCELLED), &reason_field(e.reason)).hincr_by(
            &minute,
            field::MINUTE_CANCELLED,
            1,
        )
    } else if event.is::<StockReserved>() {
        event.decode::<StockReserved>()?;
        count(fx, field::FUNNEL_STOCK_RESERVED)
    } else if event.is::<StockRejected>() {
        event.decode::<StockRejected>()?;
        count(fx, field::FUNNEL_STOCK_REJECTED)
    } else if event.is::<StockLow>() {
        let e = event.decode::<StockLow>()?;
        let detected_at_ms = e
            .detected_at
            .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
            .unwrap_or_else(|| event.meta.time.timestamp_millis());
        let report = StockReport::Low {
            available: e.available,
            threshold: e.threshold,
            detected_at_ms,
        };
        fx.sadd(&keys.low_skus(), &e.sku).hset(
            &keys.stock(&e.sku),
            &StockReport::field(event.meta.time, &event.meta.id),
            &report.encode(),
        )
    } else if event.is::<StockAdjusted>() {
        let e = event.decode::<StockAdjusted>()?;
        let report = StockReport::Adjusted {
            available: e.available,
        };
        fx.hset(
            &keys.stock(&e.sku),
            &StockReport::field(event.meta.time, &event.meta.id),
            &report.encode(),
        )
    } else if event.is::<StockReleased>() {
        event.decode::<StockReleased>()?;
        fx
    } else if event.is::<StockCommitted>() {
        event.decode::<StockCommitted>()?;
        fx
    } else if event.is::<PaymentAuthorized>() {
        event.decode::<PaymentAuthorized>()?;
        count(fx, field::FUNNEL_PAYMENT_AUTHORIZED)
    } else if event.is::<PaymentDeclined>() {
        event.decode::<PaymentDeclined>()?;
        count(fx, field::FUNNEL_PAYMENT_DECLINED)
    } else if event.is::<PaymentCaptured>() {
        event.decode::<PaymentCaptured>()?;
        count(fx, field::FUNNEL_PAYMENT_CAPTURED)
    } else if event.is::<PaymentVoided>() {
        event.decode::<PaymentVoided>()?;
        fx
    } else if event.is::<NotificationSent>() {
        event.decode::<NotificationSent>()?;
        count(fx, field::NOTIFICATIONS_SENT)
    } else if event.is::<NotificationFailed>() {
        let e = event.decode::<NotificationFailed>()?;
        let fx = count(fx, field::NOTIFICATIONS_FAILED);
        if e.permanent {
            count(fx, field::NOTIFICATIONS_FAILED_PERMANENT)
        } else {
            fx
        }
    } else if event.is::<SurveyRequested>() {
        event.decode::<SurveyRequested>()?;
        count(
            count(fx, field::SURVEY_REQUESTED),
            field::FUNNEL_SURVEY_REQUESTED,
        )
    } else if event.is::<SurveyCompleted>() {
        let e = event.decode::<SurveyCompleted>()?;
        let class = domain::classify(e.score).ok_or_else(|| {
            HandlerError::permanent(format!("survey score {} is not in 0..=10", e.score))
        })?;
        let class_field = match class {
            NpsClass::Promoter => field::SURVEY_PROMOTERS,
            NpsClass::Passive => field::SURVEY_PASSIVES,
            NpsClass::Detractor => field::SURVEY_DETRACTORS,
        };
        count(
            count(count(fx, field::SURVEY_COMPLETED), class_field),
            field::FUNNEL_SURVEY_COMPLETED,
        )
    } else {
        return Err(HandlerError::permanent(format!(
            "analytics has no rule for {}",
            event.meta.event_type
        )));
    };
    Ok(fx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetmart_proto::common::v1::{Money, OrderLine};
    use jetmart_runtime::{EventMeta, OutgoingEvent};

    fn incoming<E: jetmart_proto::Event>(event: &E) -> IncomingEvent {
        let out = OutgoingEvent::new("test", "agg-1", event);
        IncomingEvent {
            meta: EventMeta::from_headers(Some(&out.nats_headers())).unwrap(),
            subject: out.subject.clone(),
            payload: out.payload.clone(),
            delivered: 1,
            stream_sequence: 1,
            decoded: Default::default(),
        }
    }

    #[test]
    fn every_event_type_has_a_rule() {
        let ks = Keyspace::new(1);
        for t in jetmart_proto::EVENT_TYPES {
            assert!(AnalyticsHandler::understands(t.type_name));
            let mut e = incoming(&OrderPlaced::default());
            e.meta.event_type = t.type_name.to_owned();
            e.payload = Default::default();
            match effects(&ks, &e) {
                Ok(fx) => assert!(!fx.is_empty()),
                // Only the rules that need content refuse an empty payload.
                Err(HandlerError::Permanent(msg)) => assert!(
                    msg.contains("total")
                        || msg.contains("score")
                        || msg.contains("accepts no such order"),
                    "{}: {msg}",
                    t.type_name
                ),
                Err(other) => panic!("{other}"),
            }
        }
        assert!(!AnalyticsHandler::understands("jetmart.order.v2.Whatever"));
    }

    #[test]
    fn confirmed_orders_count_revenue_and_each_sku_once_per_order() {
        let ks = Keyspace::new(3);
        let line = |sku: &str, q| OrderLine {
            sku: sku.into(),
            quantity: q,
            unit_price: None,
        };
        let e = incoming(&OrderConfirmed {
            order_id: uuid::Uuid::now_v7().to_string(),
            lines: vec![line("A", 2), line("B", 1), line("A", 3)],
            total: Some(Money {
                amount_minor: 700,
                currency: "EUR".into(),
            }),
            ..Default::default()
        });
        let fx = effects(&ks, &e).unwrap();
        let expected = Effects::new()
            .hincr_by(&ks.totals(), field::REVISION, 1)
            .hincr_by(&ks.totals(), field::CONFIRMED, 1)
            .hincr_by(&ks.totals(), field::FUNNEL_CONFIRMED, 1);
        let minute = ks.minute(domain::minute_start(e.meta.time));
        let expected = expected
            .hincr_by(&minute, "confirmed", 1)
            .hincr_by(&minute, "revenue:EUR", 700)
            .hincr_by(&ks.totals(), "revenue:EUR", 700)
            .hincr_by(&ks.totals(), "revenue-orders:EUR", 1)
            .zincr_by(&ks.sku_units(), "A", 5.0)
            .hincr_by(&ks.sku_orders(), "A", 1)
            .zincr_by(&ks.sku_units(), "B", 1.0)
            .hincr_by(&ks.sku_orders(), "B", 1);
        assert_eq!(fx, expected);
    }

    #[test]
    fn bad_content_is_permanent() {
        let ks = Keyspace::new(1);
        let no_total = incoming(&OrderConfirmed::default());
        assert!(matches!(
            effects(&ks, &no_total),
            Err(HandlerError::Permanent(_))
        ));
        let bad_score = incoming(&SurveyCompleted {
            score: 11,
            ..Default::default()
        });
        assert!(matches!(
            effects(&ks, &bad_score),
            Err(HandlerError::Permanent(_))
        ));
        let mut garbage = incoming(&OrderPlaced::default());
        garbage.payload = bytes_of(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            effects(&ks, &garbage),
            Err(HandlerError::Undecodable(_))
        ));
    }

    #[test]
    fn an_order_the_order_service_never_accepted_counts_nothing() {
        let ks = Keyspace::new(1);
        let money = |currency: &str| Money {
            amount_minor: 100,
            currency: currency.into(),
        };
        let line = |quantity, currency: &str| OrderLine {
            sku: "SKU-1".into(),
            quantity,
            unit_price: Some(money(currency)),
        };
        let poison = incoming(&OrderPlaced {
            order_id: "not-a-uuid".into(),
            lines: vec![line(-5, "ZZZ")],
            total: Some(money("ZZZ")),
            ..Default::default()
        });
        match effects(&ks, &poison) {
            Err(HandlerError::Permanent(why)) => {
                assert!(
                    why.contains("order.placed") && why.contains("not-a-uuid"),
                    "{why}"
                )
            }
            other => panic!("poison must be refused for good: {other:?}"),
        }
        let accepted = incoming(&OrderPlaced {
            order_id: uuid::Uuid::now_v7().to_string(),
            lines: vec![line(5, "EUR")],
            total: Some(money("EUR")),
            ..Default::default()
        });
        let fx = effects(&ks, &accepted).unwrap();
        assert!(!fx.is_empty());
        let cancelled = incoming(&OrderCancelled {
            order_id: "not-a-uuid".into(),
            ..Default::default()
        });
        assert!(matches!(
            effects(&ks, &cancelled),
            Err(HandlerError::Permanent(_))
        ));
    }

    fn bytes_of(b: &[u8]) -> prost::bytes::Bytes {
        prost::bytes::Bytes::copy_from_slice(b)
    }

    #[test]
    fn unknown_reasons_are_kept_by_number() {
        assert_eq!(
            reason_field(CancelReason::OutOfStock as i32),
            "cancel:CANCEL_REASON_OUT_OF_STOCK"
        );
        assert_eq!(reason_field(99), "cancel:99");
    }
}
