//! Domain <-> protobuf: the API's Order and the events published on the ORDER stream.

use jetmart_kit::time::timestamp;
use jetmart_proto::common::v1 as common;
use jetmart_proto::order::v1 as pb;
use jetmart_runtime::OutgoingEvent;

use crate::domain::{
    CancelReason, LineInput, Money, Order, OrderEvent, OrderLine, OrderStatus, PlaceOrderInput,
    PriceInput, Shortage,
};

/// Event source name (`ce-source`).
pub const SOURCE: &str = "order";

pub fn money(m: Money) -> common::Money {
    common::Money {
        amount_minor: m.amount_minor(),
        currency: m.currency().code().to_owned(),
    }
}

fn line(l: &OrderLine) -> common::OrderLine {
    common::OrderLine {
        sku: l.sku.clone(),
        quantity: l.quantity as i32,
        unit_price: Some(money(l.unit_price)),
    }
}

fn lines(order: &Order) -> Vec<common::OrderLine> {
    order.lines().iter().map(line).collect()
}

pub fn shortage(s: &Shortage) -> common::Shortage {
    common::Shortage {
        sku: s.sku.clone(),
        requested: s.requested as i64,
        available: s.available as i64,
    }
}

pub fn shortage_from(s: &common::Shortage) -> Shortage {
    Shortage {
        sku: s.sku.clone(),
        requested: s.requested.max(0) as u64,
        available: s.available.max(0) as u64,
    }
}

pub fn status(s: OrderStatus) -> pb::OrderStatus {
    match s {
        OrderStatus::Pending => pb::OrderStatus::Pending,
        OrderStatus::Confirmed => pb::OrderStatus::Confirmed,
        OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
    }
}

pub fn reason(r: CancelReason) -> pb::CancelReason {
    match r {
        CancelReason::OutOfStock => pb::CancelReason::OutOfStock,
        CancelReason::PaymentDeclined => pb::CancelReason::PaymentDeclined,
        CancelReason::Customer => pb::CancelReason::Customer,
    }
}

/// The order as the API returns it.
pub fn order(o: &Order) -> pb::Order {
    let history: Vec<pb::OrderStatusChange> = o
        .history()
        .iter()
        .enumerate()
        .map(|(i, change)| pb::OrderStatusChange {
            status: status(change.status) as i32,
            at: Some(timestamp(change.at)),
            version: i as i64 + 1,
            detail: match (change.status, o.cancellation()) {
                (OrderStatus::Cancelled, Some(c)) => c.detail.clone(),
                _ => String::new(),
            },
        })
        .collect();
    let updated_at = o
        .history()
        .last()
        .map(|c| c.at)
        .unwrap_or_else(|| o.placed_at());
    let cancellation = o.cancellation();
    pb::Order {
        order_id: o.id().to_string(),
        customer_id: o.customer_id().to_owned(),
        customer_email: o.customer_email().to_owned(),
        status: status(o.status()) as i32,
        version: o.version() as i64,
        lines: lines(o),
        total: Some(money(o.total())),
        payment_id: o.payment_id().map(|p| p.to_string()).unwrap_or_default(),
        cancel_reason: cancellation.map_or(pb::CancelReason::Unspecified, |c| reason(c.reason))
            as i32,
        shortages: cancellation
            .map(|c| c.shortages.iter().map(shortage).collect())
            .unwrap_or_default(),
        cancel_detail: cancellation.map(|c| c.detail.clone()).unwrap_or_default(),
        history,
        created_at: Some(timestamp(o.placed_at())),
        updated_at: Some(timestamp(updated_at)),
    }
}

/// The stream event announcing `event`, which `order` (its state after the event) now reflects.
pub fn outgoing(o: &Order, event: &OrderEvent) -> OutgoingEvent {
    let id = o.id().to_string();
    match event {
        OrderEvent::Placed(p) => OutgoingEvent::at(
            SOURCE,
            &id,
            &pb::OrderPlaced {
                order_id: id.clone(),
                customer_id: o.customer_id().to_owned(),
                customer_email: o.customer_email().to_owned(),
                lines: lines(o),
                total: Some(money(o.total())),
                payment_token: o.payment_token().to_owned(),
                placed_at: Some(timestamp(p.at)),
            },
            p.at,
        ),
        OrderEvent::Confirmed { payment_id, at } => OutgoingEvent::at(
            SOURCE,
            &id,
            &pb::OrderConfirmed {
                order_id: id.clone(),
                customer_id: o.customer_id().to_owned(),
                customer_email: o.customer_email().to_owned(),
                lines: lines(o),
                total: Some(money(o.total())),
                payment_id: payment_id.to_string(),
                confirmed_at: Some(timestamp(*at)),
            },
            *at,
        ),
        OrderEvent::Cancelled {
            reason: r,
            shortages,
            detail,
            at,
        } => OutgoingEvent::at(
            SOURCE,
            &id,
            &pb::OrderCancelled {
                order_id: id.clone(),
                customer_id: o.customer_id().to_owned(),
                customer_email: o.customer_email().to_owned(),
                lines: lines(o),
                total: Some(money(o.total())),
                reason: reason(*r) as i32,
                shortages: shortages.iter().map(shortage).collect(),
                detail: detail.clone(),
                cancelled_at: Some(timestamp(*at)),
            },
            *at,
        ),
    }
}

/// The API request as the domain's validation input.
pub fn place_input(r: &pb::PlaceOrderRequest) -> PlaceOrderInput {
    PlaceOrderInput {
        customer_id: r.customer_id.clone(),
        customer_email: r.customer_email.clone(),
        lines: r
            .lines
            .iter()
            .map(|l| LineInput {
                sku: l.sku.clone(),
                quantity: i64::from(l.quantity),
                unit_price: l
                    .unit_price
                    .as_ref()
                    .map(|p| PriceInput {
                        amount_minor: p.amount_minor,
                        currency: p.currency.clone(),
                    })
                    .unwrap_or_default(),
            })
            .collect(),
        currency: r.currency.clone(),
        payment_token: r.payment_token.clone(),
        idempotency_key: r.idempotency_key.clone(),
    }
}
