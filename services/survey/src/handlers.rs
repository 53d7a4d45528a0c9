//! `order.confirmed` -> the survey rules -> maybe `survey.requested`, in the consumer's
//! transaction.
//!
//! The decision depends only on the event and the committed history of its customer (locked
//! while deciding), and all times come from the event, so a redelivery decides nothing new and a
//! replay of the ORDER stream into a fresh database decides the same. The consumer processes
//! order.confirmed in stream order (see [`crate::app`]) because the first-order and cool-down
//! rules depend on which of a customer's orders came first.

use chrono::{TimeDelta, Utc};
use jetmart_kit::time::{from_timestamp, timestamp};
use jetmart_proto::order::v1::OrderConfirmed;
use jetmart_proto::survey::v1::SurveyRequested;
use jetmart_runtime::consumer::{HandlerError, PgHandler};
use jetmart_runtime::envelope::header;
use jetmart_runtime::{IncomingEvent, OutgoingEvent, outbox};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::NAME;
use crate::domain::{Decision, EligibilityConfig, OrderFacts, decide, issue_token, survey_link};
use crate::store::{self, NewInvitation};

/// Consumes `order.confirmed`.
#[derive(Debug, Clone)]
pub struct ConfirmedOrderHandler {
    pub rules: EligibilityConfig,
    pub token_ttl: TimeDelta,
    /// SURVEY_PUBLIC_URL without a trailing slash.
    pub public_base: String,
}

/// The facts the rules need, from the event. `confirmed_at` falls back to the envelope's time,
/// which a replay also reproduces.
fn order_facts(e: &OrderConfirmed, event: &IncomingEvent) -> Result<OrderFacts, HandlerError> {
    let order_id = Uuid::parse_str(&e.order_id)
        .map_err(|_| HandlerError::permanent(format!("order id {:?} is not a UUID", e.order_id)))?;
    if e.customer_id.trim().is_empty() {
        return Err(HandlerError::permanent(format!(
            "order {order_id} has no customer id"
        )));
    }
    let total = e
        .total
        .as_ref()
        .ok_or_else(|| HandlerError::permanent(format!("order {order_id} has no total")))?;
    let confirmed_at = e
        .confirmed_at
        .as_ref()
        .and_then(from_timestamp)
        .unwrap_or(event.meta.time);
    Ok(OrderFacts {
        order_id,
        customer_id: e.customer_id.clone(),
        currency: total.currency.clone(),
        total_minor: total.amount_minor,
        confirmed_at,
    })
}

impl PgHandler for ConfirmedOrderHandler {
    fn handles(&self, event_type: &str) -> bool {
        crate::CONSUMES.handles(event_type)
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &IncomingEvent,
    ) -> Result<(), HandlerError> {
        let e: OrderConfirmed = event.decode()?;
        let order = order_facts(&e, event)?;
        let history = store::lock_customer(tx, &order.customer_id).await?;
        // The same order under another event id (re-published): decided once already. Checked
        // under the customer's lock, so two copies handled at once cannot both decide.
        if store::order_decided(tx, order.order_id).await? {
            tracing::debug!(order_id = %order.order_id, event_id = %event.meta.id, "order already decided");
            return Ok(());
        }
        let decision = decide(&order, &history, &self.rules);
        store::record_decision(tx, &order, &decision).await?;
        if let Decision::NotEligible(why) = &decision {
            tracing::info!(order_id = %order.order_id, decision = store::decision_code(&decision), reason = %why, "no survey");
            return Ok(());
        }

        let requested_at = Utc::now();
        let issued = issue_token(requested_at, self.token_ttl);
        let survey_id = Uuid::now_v7();
        let requested = SurveyRequested {
            survey_id: survey_id.to_string(),
            order_id: order.order_id.to_string(),
            customer_id: order.customer_id.clone(),
            customer_email: e.customer_email.clone(),
            token: issued.token.as_str().to_owned(),
            link: survey_link(&self.public_base, &issued.token),
            expires_at: Some(timestamp(issued.expires_at)),
            requested_at: Some(timestamp(requested_at)),
        };
        let out = OutgoingEvent::at(NAME, &requested.survey_id, &requested, requested_at)
            .caused_by(&event.meta);
        store::insert_invitation(
            tx,
            &NewInvitation {
                survey_id,
                order_id: order.order_id,
                customer_id: &order.customer_id,
                token_hash: &issued.hash,
                requested_at,
                expires_at: issued.expires_at,
                correlation_id: out.headers.get(header::CORRELATION_ID).map(String::as_str),
            },
        )
        .await?;
        outbox::enqueue(tx, &[out]).await?;
        tracing::info!(survey_id = %survey_id, order_id = %order.order_id, expires_at = %issued.expires_at, "survey requested");
        Ok(())
    }
}
