//! The events inventory publishes (through the outbox), built from domain values.
//! Reservation events are keyed by order (`inventory.<event>.<order_id>`), stock events by SKU
//! (`inventory.<event>.<sku>`).

use chrono::{DateTime, Utc};
use jetmart_proto::common::v1::{OrderLine, Shortage as ProtoShortage};
use jetmart_proto::inventory::v1::{
    StockAdjusted, StockCommitted, StockLow, StockRejected, StockReleased, StockReserved,
};
use jetmart_proto::order::v1::OrderPlaced;
use jetmart_runtime::OutgoingEvent;
use uuid::Uuid;

use crate::domain::{LowStock, RequestedLine, Shortage};
use crate::store::as_i64;
use jetmart_kit::time::timestamp;

/// `ce-source` of every inventory event.
pub const SOURCE: &str = "inventory";

/// Every line reserved; carries the order's total, customer and payment token to payment.
pub fn reserved(placed: &OrderPlaced, at: DateTime<Utc>) -> OutgoingEvent {
    let event = StockReserved {
        order_id: placed.order_id.clone(),
        lines: placed.lines.clone(),
        total: placed.total.clone(),
        customer_id: placed.customer_id.clone(),
        payment_token: placed.payment_token.clone(),
        reserved_at: Some(timestamp(at)),
    };
    OutgoingEvent::at(SOURCE, &placed.order_id, &event, at)
}

/// Nothing reserved; every short SKU.
pub fn rejected(order_id: &str, shortages: &[Shortage], at: DateTime<Utc>) -> OutgoingEvent {
    let event = StockRejected {
        order_id: order_id.to_owned(),
        shortages: shortages
            .iter()
            .map(|s| ProtoShortage {
                sku: s.sku.clone(),
                requested: as_i64(s.requested),
                available: as_i64(s.available),
            })
            .collect(),
        rejected_at: Some(timestamp(at)),
    };
    OutgoingEvent::at(SOURCE, order_id, &event, at)
}

/// The lines as stored per SKU (merged quantities; prices are the order's business, not ours).
fn lines(held: &[RequestedLine]) -> Vec<OrderLine> {
    held.iter()
        .map(|l| OrderLine {
            sku: l.sku.clone(),
            // Merged from int32 lines of an order with bounded line count: fits; saturate anyway.
            quantity: i32::try_from(l.quantity).unwrap_or(i32::MAX),
            unit_price: None,
        })
        .collect()
}

pub fn released(order_id: &str, held: &[RequestedLine], at: DateTime<Utc>) -> OutgoingEvent {
    let event = StockReleased {
        order_id: order_id.to_owned(),
        lines: lines(held),
        released_at: Some(timestamp(at)),
    };
    OutgoingEvent::at(SOURCE, order_id, &event, at)
}

pub fn committed(order_id: &str, held: &[RequestedLine], at: DateTime<Utc>) -> OutgoingEvent {
    let event = StockCommitted {
        order_id: order_id.to_owned(),
        lines: lines(held),
        committed_at: Some(timestamp(at)),
    };
    OutgoingEvent::at(SOURCE, order_id, &event, at)
}

pub fn low(sku: &str, low: &LowStock, at: DateTime<Utc>) -> OutgoingEvent {
    let event = StockLow {
        sku: sku.to_owned(),
        available: as_i64(low.available),
        threshold: as_i64(low.threshold),
        detected_at: Some(timestamp(at)),
    };
    OutgoingEvent::at(SOURCE, sku, &event, at)
}

pub fn adjusted(
    sku: &str,
    delta: i64,
    reason: &str,
    available: u64,
    adjustment_id: Uuid,
    at: DateTime<Utc>,
) -> OutgoingEvent {
    let event = StockAdjusted {
        sku: sku.to_owned(),
        delta,
        reason: reason.to_owned(),
        available: as_i64(available),
        adjustment_id: adjustment_id.to_string(),
        adjusted_at: Some(timestamp(at)),
    };
    OutgoingEvent::at(SOURCE, sku, &event, at)
}
