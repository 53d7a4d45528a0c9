//! The event-sourced order aggregate.
//!
//! State is only ever built by applying [`OrderEvent`]s ([`Order::from_events`], [`Order::apply`]).
//! Decisions ([`Order::place`], [`Order::confirm`], [`Order::cancel`]) never mutate: they return
//! the events to append, which the store writes with optimistic concurrency on
//! [`Order::version`] (expected version = the version the decision was taken on).
//!
//! Transition guards make event-driven inputs harmless when late, duplicated or out of order:
//! confirming or cancelling a terminal order decides nothing (no events). Only a *customer*
//! cancel of a non-PENDING order is an error ([`CancelRefused`], FAILED_PRECONDITION).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::events::{CancelReason, OrderEvent, OrderId, OrderPlaced, Shortage};
use super::fingerprint::RequestFingerprint;
use super::money::{Currency, Money};
use super::validation::{OrderLine, ValidatedOrder};

/// Longest `detail` kept in a Cancelled event; longer text is cut at a character boundary.
pub const MAX_DETAIL_LEN: usize = 1_000;

/// Lifecycle status of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Cancelled,
}

impl OrderStatus {
    pub fn is_terminal(self) -> bool {
        self != OrderStatus::Pending
    }

    /// The API spelling: `PENDING`, `CONFIRMED`, `CANCELLED`.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the status history: the status entered and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: OrderStatus,
    pub at: DateTime<Utc>,
}

/// A request to cancel, and, once applied, why the order was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    pub reason: CancelReason,
    pub shortages: Vec<Shortage>,
    pub detail: String,
}

impl Cancellation {
    /// Inventory rejected the reservation (`inventory.rejected`).
    pub fn out_of_stock(shortages: Vec<Shortage>) -> Cancellation {
        Cancellation {
            reason: CancelReason::OutOfStock,
            shortages,
            detail: String::new(),
        }
    }

    /// The gateway declined (`payment.declined`); `detail` is the decline reason.
    pub fn payment_declined(detail: impl Into<String>) -> Cancellation {
        Cancellation {
            reason: CancelReason::PaymentDeclined,
            shortages: Vec::new(),
            detail: detail.into(),
        }
    }

    /// The customer asked (CancelOrder); `detail` is their optional note.
    pub fn customer(detail: impl Into<String>) -> Cancellation {
        Cancellation {
            reason: CancelReason::Customer,
            shortages: Vec::new(),
            detail: detail.into(),
        }
    }
}

/// A customer cancel of an order that is no longer PENDING (FAILED_PRECONDITION).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("order is {status}; only a PENDING order can be cancelled")]
pub struct CancelRefused {
    pub status: OrderStatus,
}

/// An event stream that cannot be an order's history (corrupt store or a bug).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("an order's history must start with a placed event")]
    NotPlacedFirst,
    #[error("order placed twice")]
    PlacedTwice,
    #[error("{event} event on a {status} order")]
    AfterTerminal {
        event: &'static str,
        status: OrderStatus,
    },
}

/// Current state of one order, rebuilt from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    placed: OrderPlaced,
    status: OrderStatus,
    version: u64,
    history: Vec<StatusChange>,
    payment_id: Option<Uuid>,
    cancellation: Option<Cancellation>,
}

impl Order {
    /// Decides the placement of a validated order: always exactly one `Placed` event.
    pub fn place(order: ValidatedOrder, id: OrderId, now: DateTime<Utc>) -> Vec<OrderEvent> {
        let fingerprint = RequestFingerprint::of(&order);
        vec![OrderEvent::Placed(OrderPlaced {
            order_id: id,
            customer_id: order.customer_id().to_owned(),
            customer_email: order.customer_email().to_owned(),
            lines: order.lines().to_vec(),
            currency: order.currency(),
            total: order.total(),
            payment_token: order.payment_token().to_owned(),
            idempotency_key: order.idempotency_key().to_owned(),
            fingerprint,
            at: now,
        })]
    }

    /// Rebuilds an order from its complete history, oldest first.
    pub fn from_events<'a>(
        events: impl IntoIterator<Item = &'a OrderEvent>,
    ) -> Result<Order, ReplayError> {
        let mut events = events.into_iter();
        let mut order = match events.next() {
            Some(OrderEvent::Placed(p)) => Order {
                placed: p.clone(),
                status: OrderStatus::Pending,
                version: 1,
                history: vec![StatusChange {
                    status: OrderStatus::Pending,
                    at: p.at,
                }],
                payment_id: None,
                cancellation: None,
            },
            _ => return Err(ReplayError::NotPlacedFirst),
        };
        for e in events {
            order.apply(e)?;
        }
        Ok(order)
    }

    /// Applies the next event of this order's history (increments the version).
    pub fn apply(&mut self, event: &OrderEvent) -> Result<(), ReplayError> {
        match event {
            OrderEvent::Placed(_) => return Err(ReplayError::PlacedTwice),
            _ if self.status.is_terminal() => {
                return Err(ReplayError::AfterTerminal {
                    event: event.kind(),
                    status: self.status,
                });
            }
            OrderEvent::Confirmed { payment_id, at } => {
                self.status = OrderStatus::Confirmed;
                self.payment_id = Some(*payment_id);
                self.history.push(StatusChange {
                    status: OrderStatus::Confirmed,
                    at: *at,
                });
            }
            OrderEvent::Cancelled {
                reason,
                shortages,
                detail,
                at,
            } => {
                self.status = OrderStatus::Cancelled;
                self.cancellation = Some(Cancellation {
                    reason: *reason,
                    shortages: shortages.clone(),
                    detail: detail.clone(),
                });
                self.history.push(StatusChange {
                    status: OrderStatus::Cancelled,
                    at: *at,
                });
            }
        }
        self.version += 1;
        Ok(())
    }

    /// Decides a confirmation after `payment.authorized`.
    ///
    /// PENDING gives one `Confirmed` event. A terminal order gives none: a duplicate
    /// authorization changes nothing, and a late one after a cancel confirms nothing (the
    /// payment service voids that authorization when it sees `order.cancelled`).
    pub fn confirm(&self, payment_id: Uuid, now: DateTime<Utc>) -> Vec<OrderEvent> {
        if self.status.is_terminal() {
            return Vec::new();
        }
        vec![OrderEvent::Confirmed {
            payment_id,
            at: now,
        }]
    }

    /// Decides a cancellation.
    ///
    /// PENDING gives one `Cancelled` event. On a terminal order, event-driven reasons
    /// (OUT_OF_STOCK, PAYMENT_DECLINED) decide nothing (`Ok(vec![])`), while a customer cancel
    /// is refused. `detail` is cut to [`MAX_DETAIL_LEN`] bytes.
    pub fn cancel(
        &self,
        cancellation: Cancellation,
        now: DateTime<Utc>,
    ) -> Result<Vec<OrderEvent>, CancelRefused> {
        if self.status.is_terminal() {
            return match cancellation.reason {
                CancelReason::Customer => Err(CancelRefused {
                    status: self.status,
                }),
                CancelReason::OutOfStock | CancelReason::PaymentDeclined => Ok(Vec::new()),
            };
        }
        let Cancellation {
            reason,
            shortages,
            mut detail,
        } = cancellation;
        truncate_at_char_boundary(&mut detail, MAX_DETAIL_LEN);
        Ok(vec![OrderEvent::Cancelled {
            reason,
            shortages,
            detail,
            at: now,
        }])
    }

    pub fn id(&self) -> OrderId {
        self.placed.order_id
    }
    pub fn status(&self) -> OrderStatus {
        self.status
    }
    /// Number of events applied; the expected version for the next append.
    pub fn version(&self) -> u64 {
        self.version
    }
    /// Statuses entered, oldest first (starts with PENDING at placement).
    pub fn history(&self) -> &[StatusChange] {
        &self.history
    }
    pub fn customer_id(&self) -> &str {
        &self.placed.customer_id
    }
    pub fn customer_email(&self) -> &str {
        &self.placed.customer_email
    }
    pub fn lines(&self) -> &[OrderLine] {
        &self.placed.lines
    }
    pub fn currency(&self) -> Currency {
        self.placed.currency
    }
    pub fn total(&self) -> Money {
        self.placed.total
    }
    pub fn payment_token(&self) -> &str {
        &self.placed.payment_token
    }
    pub fn idempotency_key(&self) -> &str {
        &self.placed.idempotency_key
    }
    pub fn fingerprint(&self) -> &RequestFingerprint {
        &self.placed.fingerprint
    }
    pub fn placed_at(&self) -> DateTime<Utc> {
        self.placed.at
    }
    /// The payment that confirmed the order, once CONFIRMED.
    pub fn payment_id(&self) -> Option<Uuid> {
        self.payment_id
    }
    /// Why the order was cancelled, once CANCELLED.
    pub fn cancellation(&self) -> Option<&Cancellation> {
        self.cancellation.as_ref()
    }
}

fn truncate_at_char_boundary(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validation::tests::valid_input;
    use crate::domain::validation::{Limits, validate};
    use chrono::TimeDelta;
    use proptest::prelude::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn placed() -> (Order, Vec<OrderEvent>) {
        let v = validate(&valid_input(), &Limits::default()).unwrap();
        let events = Order::place(v, OrderId(Uuid::from_u128(1)), t(0));
        (Order::from_events(&events).unwrap(), events)
    }

    fn step(order: &mut Order, log: &mut Vec<OrderEvent>, events: Vec<OrderEvent>) {
        for e in events {
            order.apply(&e).unwrap();
            log.push(e);
        }
    }

    #[test]
    fn place_creates_a_pending_order_with_all_its_data() {
        let (order, events) = placed();
        assert_eq!(events.len(), 1);
        assert_eq!(order.id(), OrderId(Uuid::from_u128(1)));
        assert_eq!(order.status(), OrderStatus::Pending);
        assert_eq!(order.version(), 1);
        assert_eq!(
            order.history(),
            [StatusChange {
                status: OrderStatus::Pending,
                at: t(0)
            }]
        );
        assert_eq!(order.total(), Money::new(2599, Currency::Eur));
        assert_eq!(order.currency(), Currency::Eur);
        assert_eq!(order.lines().len(), 2);
        assert_eq!(order.customer_id(), "cust-42");
        assert_eq!(order.customer_email(), "jane@example.com");
        assert_eq!(order.payment_token(), "tok_visa");
        assert_eq!(order.idempotency_key(), "key-1");
        assert_eq!(order.placed_at(), t(0));
        assert_eq!(
            order.fingerprint(),
            &RequestFingerprint::of(&validate(&valid_input(), &Limits::default()).unwrap())
        );
        assert_eq!(order.payment_id(), None);
        assert_eq!(order.cancellation(), None);
    }

    #[test]
    fn confirm_pending_then_duplicates_are_no_ops() {
        let (mut order, mut log) = placed();
        let pay = Uuid::from_u128(9);
        let events = order.confirm(pay, t(5));
        assert_eq!(
            events,
            [OrderEvent::Confirmed {
                payment_id: pay,
                at: t(5)
            }]
        );
        step(&mut order, &mut log, events);
        assert_eq!(order.status(), OrderStatus::Confirmed);
        assert_eq!(order.payment_id(), Some(pay));
        assert_eq!(order.version(), 2);
        assert_eq!(
            order.history()[1],
            StatusChange {
                status: OrderStatus::Confirmed,
                at: t(5)
            }
        );
        // Duplicate authorization, late decline, late rejection: nothing.
        assert!(order.confirm(pay, t(6)).is_empty());
        assert_eq!(
            order.cancel(Cancellation::payment_declined("late"), t(7)),
            Ok(vec![])
        );
        assert_eq!(
            order.cancel(Cancellation::out_of_stock(vec![]), t(7)),
            Ok(vec![])
        );
    }

    #[test]
    fn customer_cancel_of_a_non_pending_order_is_refused() {
        let (mut order, mut log) = placed();
        let events = order.confirm(Uuid::from_u128(9), t(1));
        step(&mut order, &mut log, events);
        assert_eq!(
            order.cancel(Cancellation::customer(""), t(2)),
            Err(CancelRefused {
                status: OrderStatus::Confirmed
            })
        );
        assert_eq!(
            CancelRefused {
                status: OrderStatus::Cancelled
            }
            .to_string(),
            "order is CANCELLED; only a PENDING order can be cancelled"
        );
    }

    #[test]
    fn out_of_stock_cancel_keeps_the_shortages_and_late_authorization_confirms_nothing() {
        let (mut order, mut log) = placed();
        let shortages = vec![Shortage {
            sku: "SKU-1".into(),
            requested: 2,
            available: 0,
        }];
        let events = order
            .cancel(Cancellation::out_of_stock(shortages.clone()), t(3))
            .unwrap();
        step(&mut order, &mut log, events);
        assert_eq!(order.status(), OrderStatus::Cancelled);
        assert_eq!(order.cancellation().unwrap().shortages, shortages);
        assert_eq!(
            order.cancellation().unwrap().reason,
            CancelReason::OutOfStock
        );
        assert!(order.confirm(Uuid::from_u128(9), t(4)).is_empty());
        assert_eq!(
            order.cancel(Cancellation::customer(""), t(4)),
            Err(CancelRefused {
                status: OrderStatus::Cancelled
            })
        );
    }

    #[test]
    fn customer_cancel_while_pending() {
        let (order, _) = placed();
        let events = order
            .cancel(Cancellation::customer("changed my mind"), t(1))
            .unwrap();
        assert!(matches!(
            &events[..],
            [OrderEvent::Cancelled { reason: CancelReason::Customer, detail, .. }] if detail == "changed my mind"
        ));
    }

    #[test]
    fn detail_is_truncated_at_a_char_boundary() {
        let (order, _) = placed();
        let long = "é".repeat(MAX_DETAIL_LEN); // 2 bytes each
        let events = order.cancel(Cancellation::customer(long), t(1)).unwrap();
        let OrderEvent::Cancelled { detail, .. } = &events[0] else {
            panic!("not cancelled")
        };
        assert_eq!(detail.len(), MAX_DETAIL_LEN);
        assert!(detail.chars().all(|c| c == 'é'));
    }

    #[test]
    fn replay_refuses_impossible_histories() {
        let (_, placed_events) = placed();
        let confirm = OrderEvent::Confirmed {
            payment_id: Uuid::nil(),
            at: t(1),
        };
        let cancel = OrderEvent::Cancelled {
            reason: CancelReason::Customer,
            shortages: vec![],
            detail: String::new(),
            at: t(2),
        };
        assert_eq!(Order::from_events(&[]), Err(ReplayError::NotPlacedFirst));
        assert_eq!(
            Order::from_events([&confirm]),
            Err(ReplayError::NotPlacedFirst)
        );
        let twice = [placed_events[0].clone(), placed_events[0].clone()];
        assert_eq!(Order::from_events(&twice), Err(ReplayError::PlacedTwice));
        let two_terminal = [placed_events[0].clone(), confirm, cancel];
        assert_eq!(
            Order::from_events(&two_terminal),
            Err(ReplayError::AfterTerminal {
                event: "cancelled",
                status: OrderStatus::Confirmed
            })
        );
    }

    #[test]
    fn events_survive_a_json_round_trip() {
        let (order, mut log) = placed();
        log.extend(order.confirm(Uuid::from_u128(3), t(1)));
        let json = serde_json::to_string(&log).unwrap();
        let back: Vec<OrderEvent> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, log);
        assert_eq!(
            Order::from_events(&back).unwrap().status(),
            OrderStatus::Confirmed
        );
    }

    #[derive(Debug, Clone)]
    enum Input {
        Authorized(u128),
        Declined,
        Rejected(u64),
        CustomerCancel,
    }

    fn arb_input() -> impl Strategy<Value = Input> {
        prop_oneof![
            (0u128..3).prop_map(Input::Authorized),
            Just(Input::Declined),
            (0u64..5).prop_map(Input::Rejected),
            Just(Input::CustomerCancel),
        ]
    }

    proptest! {
        /// Any sequence of decisions keeps the invariants: at most one terminal event, version =
        /// events applied, history length = version, replay rebuilds the same state, and a
        /// terminal order never changes again.
        #[test]
        fn decisions_keep_the_invariants(inputs in proptest::collection::vec(arb_input(), 0..20)) {
            let (mut order, mut log) = placed();
            for (i, input) in inputs.into_iter().enumerate() {
                let now = t(0) + TimeDelta::seconds(i as i64 + 1);
                let before = order.clone();
                let decided = match input {
                    Input::Authorized(p) => Ok(order.confirm(Uuid::from_u128(p), now)),
                    Input::Declined => order.cancel(Cancellation::payment_declined("declined"), now),
                    Input::Rejected(n) => order.cancel(
                        Cancellation::out_of_stock(vec![Shortage { sku: "SKU-1".into(), requested: n + 1, available: n }]),
                        now,
                    ),
                    Input::CustomerCancel => order.cancel(Cancellation::customer(""), now),
                };
                match decided {
                    Ok(events) => {
                        prop_assert!(events.len() <= 1);
                        if before.status().is_terminal() {
                            prop_assert!(events.is_empty());
                        }
                        step(&mut order, &mut log, events);
                    }
                    Err(CancelRefused { status }) => {
                        prop_assert!(status.is_terminal());
                        prop_assert_eq!(status, before.status());
                    }
                }
                if before.status().is_terminal() {
                    prop_assert_eq!(&order, &before);
                }
                prop_assert!(log.iter().filter(|e| e.is_terminal()).count() <= 1);
                prop_assert_eq!(order.version(), log.len() as u64);
                prop_assert_eq!(order.history().len() as u64, order.version());
                prop_assert_eq!(&Order::from_events(&log).unwrap(), &order);
                prop_assert_eq!(order.status().is_terminal(), log.len() == 2);
            }
        }
    }
}
