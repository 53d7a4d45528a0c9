//! The order's events: the source of truth of the event-sourced aggregate.
//!
//! They derive serde so the store may keep them as JSON; the wire format on NATS is the
//! protobuf contract, mapped by the event layer.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::fingerprint::RequestFingerprint;
use super::money::{Currency, Money};
use super::validation::OrderLine;

/// Identity of an order (a UUIDv7 chosen by the service at placement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub Uuid);

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why an order was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CancelReason {
    /// Inventory could not reserve every line (`inventory.rejected`).
    OutOfStock,
    /// The payment gateway declined (`payment.declined`).
    PaymentDeclined,
    /// The customer cancelled while the order was PENDING (CancelOrder).
    Customer,
}

impl CancelReason {
    /// The API spelling: `OUT_OF_STOCK`, `PAYMENT_DECLINED`, `CUSTOMER`.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::OutOfStock => "OUT_OF_STOCK",
            CancelReason::PaymentDeclined => "PAYMENT_DECLINED",
            CancelReason::Customer => "CUSTOMER",
        }
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SKU inventory could not fully reserve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortage {
    pub sku: String,
    pub requested: u64,
    pub available: u64,
}

/// Everything known about an order when it is placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub customer_id: String,
    pub customer_email: String,
    pub lines: Vec<OrderLine>,
    pub currency: Currency,
    pub total: Money,
    /// Opaque token from the payment provider; never card data.
    pub payment_token: String,
    pub idempotency_key: String,
    pub fingerprint: RequestFingerprint,
    pub at: DateTime<Utc>,
}

/// One fact in an order's history. The n-th event of an order has version n (1-based).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OrderEvent {
    Placed(OrderPlaced),
    Confirmed {
        payment_id: Uuid,
        at: DateTime<Utc>,
    },
    Cancelled {
        reason: CancelReason,
        /// Non-empty only for [`CancelReason::OutOfStock`].
        shortages: Vec<Shortage>,
        /// Free text for people (decline message, customer note); bounded, see `MAX_DETAIL_LEN`.
        detail: String,
        at: DateTime<Utc>,
    },
}

impl OrderEvent {
    /// The event name used in subjects: `order.<kind>.<order-id>`.
    pub fn kind(&self) -> &'static str {
        match self {
            OrderEvent::Placed(_) => "placed",
            OrderEvent::Confirmed { .. } => "confirmed",
            OrderEvent::Cancelled { .. } => "cancelled",
        }
    }

    /// When the event happened.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            OrderEvent::Placed(p) => p.at,
            OrderEvent::Confirmed { at, .. } | OrderEvent::Cancelled { at, .. } => *at,
        }
    }

    /// Whether the event ends the order's life (CONFIRMED or CANCELLED).
    pub fn is_terminal(&self) -> bool {
        !matches!(self, OrderEvent::Placed(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelled_round_trips_through_json_with_stable_names() {
        let e = OrderEvent::Cancelled {
            reason: CancelReason::OutOfStock,
            shortages: vec![Shortage {
                sku: "A".into(),
                requested: 3,
                available: 1,
            }],
            detail: "short".into(),
            at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "cancelled");
        assert_eq!(json["reason"], "OUT_OF_STOCK");
        assert_eq!(serde_json::from_value::<OrderEvent>(json).unwrap(), e);
        assert_eq!(e.kind(), "cancelled");
        assert!(e.is_terminal());
        assert_eq!(
            CancelReason::PaymentDeclined.to_string(),
            "PAYMENT_DECLINED"
        );
    }
}
