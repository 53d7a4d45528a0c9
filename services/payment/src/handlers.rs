//! Event handlers: `inventory.reserved` authorizes, `order.confirmed` captures,
//! `order.cancelled` voids. Each runs inside the runtime's transaction that also records the
//! event as processed; state changes and the events announcing them (outbox) commit together.
//!
//! Concurrency: every transition of a payment happens under its row lock (`store::lock`), so a
//! capture, a void and a late authorization of one order are serialized, on any replica. The
//! authorize call itself is made *without* holding the lock (it may retry for seconds), which
//! lets a cancel arriving meanwhile commit; the authorization that lands afterwards then finds the
//! payment VOIDED and is voided at once ([`Transition::VoidLateAuthorization`]).
//!
//! Deadline: an authorization that has had no answer (gateway failing, breaker open) by
//! `authorize_deadline` after the payment was created is declined as `GATEWAY_UNAVAILABLE`, so
//! the order is cancelled and its stock released instead of staying PENDING. An authorization
//! whose order was cancelled meanwhile stops retrying. In both cases an attempt whose answer was
//! lost may have left an authorization at the gateway that nobody recorded; it is never
//! captured and lapses there.
//!
//! Gateway calls are side effects outside the database. They are safe to repeat because the
//! gateway is idempotent: `authorize` per order id (the idempotency key), `capture` and `void`
//! per authorization. A crash (or a failed commit) after a gateway call but before the commit
//! therefore loses nothing: the event is redelivered, the same call is made again with the same
//! key, the gateway answers as before, and this time the answer is committed. Every handler must
//! keep that true: derive each call only from the event and the committed row, never from
//! anything that differs between deliveries.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jetmart_kit::time::timestamp;
use jetmart_proto::common::v1::Money;
use jetmart_proto::inventory::v1::StockReserved;
use jetmart_proto::order::v1::{CancelReason, OrderCancelled, OrderConfirmed};
use jetmart_proto::payment::v1 as pb;
use jetmart_runtime::consumer::{HandlerError, PgHandler};
use jetmart_runtime::{IncomingEvent, OutgoingEvent, outbox};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{
    Amount, Authorization, AuthorizeOutcome, AuthorizeRequest, DeclineReason, GatewayAction,
    Payment, PaymentCommand, PaymentError, PaymentStatus, Transition,
};
use crate::gateway::{CallError, Cause, GuardedGateway};
use crate::store::{self, StoredPayment};

/// The `ce-source` of payment's events.
pub const SOURCE: &str = "payment";

impl From<CallError> for HandlerError {
    fn from(e: CallError) -> Self {
        match e {
            // The event waits in the stream and is redelivered with backoff; nothing is lost.
            CallError::CircuitOpen { .. }
            | CallError::Exhausted { .. }
            | CallError::OutOfTime { .. }
            | CallError::OrderCancelled { .. }
            | CallError::Database(_) => HandlerError::transient(e),
            // The gateway refuses the request itself: retrying cannot help, an operator must look.
            CallError::Rejected { .. } => HandlerError::permanent(e),
        }
    }
}

/// Handles the three events payment consumes (one instance per consumer, sharing the gateway).
#[derive(Clone)]
pub struct PaymentHandler {
    pool: PgPool,
    gateway: Arc<GuardedGateway>,
    /// How long after its payment was created an authorization may take.
    authorize_deadline: Duration,
}

impl std::fmt::Debug for PaymentHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentHandler").finish_non_exhaustive()
    }
}

impl PgHandler for PaymentHandler {
    fn handles(&self, event_type: &str) -> bool {
        crate::CONSUMES.handles(event_type)
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &IncomingEvent,
    ) -> Result<(), HandlerError> {
        if event.is::<StockReserved>() {
            self.on_reserved(tx, event).await
        } else if event.is::<OrderConfirmed>() {
            self.on_confirmed(tx, event).await
        } else if event.is::<OrderCancelled>() {
            self.on_cancelled(tx, event).await
        } else {
            Ok(())
        }
    }
}

fn order_id(text: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(text)
        .map_err(|_| HandlerError::permanent(format!("order id {text:?} is not a UUID")))
}

fn amount(money: Option<&Money>) -> Amount {
    match money {
        Some(m) => Amount::new(m.amount_minor, m.currency.clone()),
        // ISO 4217 "no currency": an event without a total still gets a row (and the gateway
        // declines a zero amount).
        None => Amount::new(0, "XXX"),
    }
}

fn cause(event: &IncomingEvent) -> Cause {
    Cause {
        event_id: event.meta.id,
        delivery: event.delivered,
    }
}

fn authorization(p: &Payment) -> Option<Authorization> {
    p.authorization_id.as_ref().map(|id| Authorization {
        id: id.clone(),
        order_id: p.order_id,
        amount: p.amount.clone(),
    })
}

/// Human-readable text for a decline.
pub fn decline_message(reason: DeclineReason) -> &'static str {
    match reason {
        DeclineReason::CardDeclined => "the card issuer declined the payment",
        DeclineReason::InsufficientFunds => "insufficient funds",
        DeclineReason::AmountAboveLimit => "amount above the gateway's limit",
        DeclineReason::InvalidAmount => "amount must be positive",
        DeclineReason::InvalidToken => "payment token missing or invalid",
        DeclineReason::GatewayUnavailable => {
            "no answer from the payment gateway before the authorization deadline"
        }
    }
}

/// A state-machine refusal is a contradiction between events (for example a cancel after a
/// capture): retrying cannot resolve it, so it goes to the dead-letter stream for an operator.
fn contradiction(order_id: Uuid, e: PaymentError) -> HandlerError {
    HandlerError::permanent(format!("order {order_id}: {e}"))
}

pub(crate) fn money(a: &Amount) -> Money {
    Money {
        amount_minor: a.minor_units,
        currency: a.currency.clone(),
    }
}

pub(crate) fn decline_reason_to_proto(r: DeclineReason) -> pb::DeclineReason {
    match r {
        DeclineReason::CardDeclined => pb::DeclineReason::CardDeclined,
        DeclineReason::InsufficientFunds => pb::DeclineReason::InsufficientFunds,
        DeclineReason::InvalidToken => pb::DeclineReason::InvalidToken,
        DeclineReason::AmountAboveLimit => pb::DeclineReason::AmountAboveLimit,
        DeclineReason::InvalidAmount => pb::DeclineReason::InvalidAmount,
        DeclineReason::GatewayUnavailable => pb::DeclineReason::GatewayUnavailable,
    }
}

fn outgoing<E: jetmart_proto::Event>(
    p: &Payment,
    e: &E,
    now: DateTime<Utc>,
    cause: &IncomingEvent,
) -> OutgoingEvent {
    OutgoingEvent::at(SOURCE, &p.order_id.to_string(), e, now).caused_by(&cause.meta)
}

fn authorized_event(p: &StoredPayment, now: DateTime<Utc>, cause: &IncomingEvent) -> OutgoingEvent {
    let pay = &p.payment;
    let e = pb::PaymentAuthorized {
        order_id: pay.order_id.to_string(),
        payment_id: pay.id.to_string(),
        amount: Some(money(&pay.amount)),
        authorization_code: pay
            .authorization_id
            .as_ref()
            .map(|a| a.0.clone())
            .unwrap_or_default(),
        authorized_at: Some(timestamp(now)),
    };
    outgoing(pay, &e, now, cause)
}

fn voided_event(p: &StoredPayment, now: DateTime<Utc>, cause: &IncomingEvent) -> OutgoingEvent {
    let pay = &p.payment;
    let e = pb::PaymentVoided {
        order_id: pay.order_id.to_string(),
        payment_id: pay.id.to_string(),
        amount: Some(money(&pay.amount)),
        voided_at: Some(timestamp(now)),
    };
    outgoing(pay, &e, now, cause)
}

impl PaymentHandler {
    pub fn new(
        pool: PgPool,
        gateway: Arc<GuardedGateway>,
        authorize_deadline: Duration,
    ) -> PaymentHandler {
        PaymentHandler {
            pool,
            gateway,
            authorize_deadline,
        }
    }

    /// `inventory.reserved`: authorize the order's total.
    async fn on_reserved(
        &self,
        tx: &mut PgConnection,
        event: &IncomingEvent,
    ) -> Result<(), HandlerError> {
        let reserved: StockReserved = event.decode()?;
        let order_id = order_id(&reserved.order_id)?;
        let amount = amount(reserved.total.as_ref());

        // The PENDING row is committed on its own, before the gateway call and outside this
        // transaction, so that a cancel arriving during the call is not blocked behind it and
        // can record itself; the row lock is taken only once the gateway has answered.
        let pending = Payment::new(Uuid::now_v7(), order_id, amount.clone(), Utc::now());
        store::insert_if_absent(
            &mut *self.pool.acquire().await?,
            &StoredPayment::new(pending),
        )
        .await?;
        let current = store::get(&self.pool, order_id)
            .await?
            .ok_or_else(|| HandlerError::transient(format!("payment of {order_id} vanished")))?;
        let p = &current.payment;
        let must_call = match p.status {
            PaymentStatus::Pending => true,
            // Cancelled while an earlier authorize call was in flight (or after it crashed
            // unanswered): the gateway may hold an authorization nobody recorded. Asking again
            // with the same key tells, and whatever it authorized is voided below.
            PaymentStatus::Voided => {
                p.authorization_id.is_none() && current.authorize_requested_at.is_some()
            }
            // Already decided (a duplicate), or cancelled before any call: never authorize.
            PaymentStatus::Authorized | PaymentStatus::Captured | PaymentStatus::Declined => false,
        };
        if !must_call {
            tracing::debug!(%order_id, status = %p.status, "authorization not needed");
            return Ok(());
        }
        if p.amount != amount {
            // A redelivered reservation must carry the original total (the gateway would refuse
            // the key with another amount); a mismatch means upstream changed it.
            tracing::warn!(%order_id, recorded = %p.amount, reserved = %amount, "totals differ");
        }

        let deadline = chrono::TimeDelta::from_std(self.authorize_deadline)
            .ok()
            .and_then(|d| p.created_at.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let gave_up = AuthorizeOutcome::Declined(DeclineReason::GatewayUnavailable);
        let outcome = if amount.minor_units <= 0 {
            // Order refuses such prices, so this is a defect upstream; still the order must end,
            // and as what it is, not as a card decline.
            tracing::error!(%order_id, %amount, "reserved total is not positive, declined without a gateway call");
            AuthorizeOutcome::Declined(DeclineReason::InvalidAmount)
        } else if Utc::now() >= deadline {
            tracing::warn!(%order_id, "authorization deadline passed, giving up");
            gave_up
        } else {
            // From here on the gateway may hold an authorization: note it (committed) first.
            store::mark_authorize_requested(&self.pool, order_id).await?;
            let request = AuthorizeRequest {
                order_id,
                amount,
                token: reserved.payment_token,
            };
            let left = (deadline - Utc::now()).to_std().unwrap_or_default();
            let until = tokio::time::Instant::now() + left;
            match self.gateway.authorize(&request, cause(event), until).await {
                Ok(outcome) => outcome,
                Err(CallError::OrderCancelled { attempts, .. }) => {
                    tracing::info!(%order_id, attempts, "order cancelled while authorizing, stopped retrying");
                    return Ok(());
                }
                Err(e @ CallError::OutOfTime { .. }) => {
                    tracing::warn!(%order_id, error = %e, "authorization deadline passed, giving up");
                    gave_up
                }
                Err(e @ (CallError::CircuitOpen { .. } | CallError::Exhausted { .. }))
                    if Utc::now() >= deadline =>
                {
                    tracing::warn!(%order_id, error = %e, "authorization deadline passed, giving up");
                    gave_up
                }
                Err(e) => return Err(e.into()),
            }
        };

        // Record the answer under the row lock. If this transaction never commits (crash, lost
        // connection), the redelivered event repeats the same idempotent call: see module docs.
        let now = Utc::now();
        let mut locked = store::lock(tx, order_id)
            .await?
            .ok_or_else(|| HandlerError::transient(format!("payment of {order_id} vanished")))?;
        match outcome {
            AuthorizeOutcome::Authorized(auth) => {
                let transition = locked
                    .payment
                    .decide(&PaymentCommand::Authorize(auth.id.clone()))
                    .map_err(|e| contradiction(order_id, e))?;
                match transition {
                    Transition::Moved { .. } => {
                        locked
                            .payment
                            .handle(PaymentCommand::Authorize(auth.id.clone()), now)
                            .map_err(|e| contradiction(order_id, e))?;
                        locked.authorized_at = Some(now);
                        store::save(tx, &locked).await?;
                        outbox::enqueue(tx, &[authorized_event(&locked, now, event)]).await?;
                        tracing::info!(%order_id, authorization = %auth.id, "payment authorized");
                    }
                    Transition::VoidLateAuthorization => {
                        // Cancelled while the gateway was authorizing: release the funds now.
                        debug_assert_eq!(transition.gateway_action(), Some(GatewayAction::Void));
                        self.gateway.void(&auth, cause(event)).await?;
                        locked
                            .payment
                            .handle(PaymentCommand::Authorize(auth.id.clone()), now)
                            .map_err(|e| contradiction(order_id, e))?;
                        locked.authorized_at = Some(now);
                        locked.voided_at = Some(now);
                        store::save(tx, &locked).await?;
                        outbox::enqueue(tx, &[voided_event(&locked, now, event)]).await?;
                        tracing::info!(%order_id, authorization = %auth.id, "late authorization voided");
                    }
                    Transition::Unchanged => {}
                }
            }
            AuthorizeOutcome::Declined(reason) => {
                let transition = locked
                    .payment
                    .handle(PaymentCommand::Decline(reason), now)
                    .map_err(|e| contradiction(order_id, e))?;
                if let Transition::Moved { .. } = transition {
                    let message = decline_message(reason);
                    locked.declined_at = Some(now);
                    locked.decline_message = Some(message.to_owned());
                    store::save(tx, &locked).await?;
                    let e = pb::PaymentDeclined {
                        order_id: order_id.to_string(),
                        payment_id: locked.payment.id.to_string(),
                        reason: decline_reason_to_proto(reason).into(),
                        message: format!("{reason}: {message}"),
                        declined_at: Some(timestamp(now)),
                    };
                    outbox::enqueue(tx, &[outgoing(&locked.payment, &e, now, event)]).await?;
                    tracing::info!(%order_id, %reason, "payment declined");
                }
            }
        }
        Ok(())
    }

    /// `order.confirmed`: capture, exactly once.
    async fn on_confirmed(
        &self,
        tx: &mut PgConnection,
        event: &IncomingEvent,
    ) -> Result<(), HandlerError> {
        let confirmed: OrderConfirmed = event.decode()?;
        let order_id = order_id(&confirmed.order_id)?;
        // Locked for the whole capture: a second confirmation (or a cancel) waits, then finds
        // the payment CAPTURED.
        let Some(mut locked) = store::lock(tx, order_id).await? else {
            // Not seen yet: order confirms only after payment.authorized, so this is lag; wait.
            return Err(HandlerError::transient(format!(
                "no payment yet for order {order_id}"
            )));
        };
        let transition = match locked.payment.decide(&PaymentCommand::Capture) {
            Ok(t) => t,
            // The authorization is still being recorded: let the event come back.
            Err(PaymentError::InvalidTransition {
                from: PaymentStatus::Pending,
                ..
            }) => {
                return Err(HandlerError::transient(format!(
                    "order {order_id} confirmed while its payment is PENDING"
                )));
            }
            Err(e) => return Err(contradiction(order_id, e)),
        };
        if transition.gateway_action() != Some(GatewayAction::Capture) {
            tracing::debug!(%order_id, "already captured");
            return Ok(());
        }
        let auth = authorization(&locked.payment).ok_or_else(|| {
            HandlerError::permanent(format!(
                "authorized payment of {order_id} has no authorization id"
            ))
        })?;
        self.gateway.capture(&auth, cause(event)).await?;
        let now = Utc::now();
        locked
            .payment
            .handle(PaymentCommand::Capture, now)
            .map_err(|e| contradiction(order_id, e))?;
        locked.captured_at = Some(now);
        store::save(tx, &locked).await?;
        let e = pb::PaymentCaptured {
            order_id: order_id.to_string(),
            payment_id: locked.payment.id.to_string(),
            amount: Some(money(&locked.payment.amount)),
            captured_at: Some(timestamp(now)),
        };
        outbox::enqueue(tx, &[outgoing(&locked.payment, &e, now, event)]).await?;
        tracing::info!(%order_id, "payment captured");
        Ok(())
    }

    /// `order.cancelled`: void any authorization; a cancel before (or during) the authorization
    /// is recorded so that nothing stays authorized.
    async fn on_cancelled(
        &self,
        tx: &mut PgConnection,
        event: &IncomingEvent,
    ) -> Result<(), HandlerError> {
        let cancelled: OrderCancelled = event.decode()?;
        let order_id = order_id(&cancelled.order_id)?;
        if cancelled.reason() == CancelReason::OutOfStock
            && store::lock(tx, order_id).await?.is_none()
        {
            // Nothing was reserved, so no inventory.reserved will come and nothing was ever
            // authorized: no payment to record.
            tracing::debug!(%order_id, "cancelled for lack of stock, no payment");
            return Ok(());
        }
        let now = Utc::now();
        // Cancel before inventory.reserved: create the payment here (it goes PENDING -> VOIDED
        // below), so the reserved event that comes later finds it cancelled and never authorizes.
        let fresh = Payment::new(
            Uuid::now_v7(),
            order_id,
            amount(cancelled.total.as_ref()),
            now,
        );
        store::insert_if_absent(tx, &StoredPayment::new(fresh)).await?;
        let mut locked = store::lock(tx, order_id)
            .await?
            .ok_or_else(|| HandlerError::transient(format!("payment of {order_id} vanished")))?;
        let first_cancel = locked.cancelled_at.is_none();
        locked.cancelled_at.get_or_insert(now);

        let transition = locked
            .payment
            .decide(&PaymentCommand::Void)
            .map_err(|e| contradiction(order_id, e))?;
        let mut events = Vec::new();
        match transition {
            Transition::Moved { from, .. } => {
                if transition.gateway_action() == Some(GatewayAction::Void) {
                    let auth = authorization(&locked.payment).ok_or_else(|| {
                        HandlerError::permanent(format!(
                            "authorized payment of {order_id} has no authorization id"
                        ))
                    })?;
                    self.gateway.void(&auth, cause(event)).await?;
                }
                locked
                    .payment
                    .handle(PaymentCommand::Void, now)
                    .map_err(|e| contradiction(order_id, e))?;
                locked.voided_at = Some(now);
                store::save(tx, &locked).await?;
                if from == PaymentStatus::Authorized {
                    // Funds were held and are released now. A PENDING payment held nothing yet:
                    // no event; its authorization, if one lands, is voided and announced then.
                    events.push(voided_event(&locked, now, event));
                    tracing::info!(%order_id, "payment voided");
                } else {
                    tracing::info!(%order_id, "cancel recorded before authorization");
                }
            }
            Transition::Unchanged | Transition::VoidLateAuthorization => {
                if first_cancel {
                    store::save(tx, &locked).await?;
                }
            }
        }
        outbox::enqueue(tx, &events).await?;
        Ok(())
    }
}
