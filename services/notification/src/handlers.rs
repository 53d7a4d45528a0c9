//! Emails on `order.confirmed`, `order.cancelled` and `survey.requested`.
//!
//! One transaction per event (opened by the runtime's `PgProcessor`, which first records the
//! event id as processed, so a redelivery after commit is acknowledged without effect):
//! 1. claim `notifications (event_id, template)` as pending; a row already there means this email
//!    was decided before: nothing is sent;
//! 2. send over SMTP with the Message-ID derived from (event id, template);
//! 3. accepted -> the row becomes `sent` and `notification.sent` goes to the outbox; rejected for
//!    good (5xx, an email that cannot be built) -> `failed` and `notification.failed`; a transient
//!    failure (refused, timeout, 4xx) rolls everything back and the runner naks with backoff;
//! 4. the runtime commits, then acknowledges.
//!
//! Crash windows (what a kill, or a lost connection, at each point does):
//! - before the SMTP exchange: nothing committed, nothing sent; redelivery sends once.
//! - during the exchange, before the relay accepted (no 250 after DATA): the relay discards the
//!   unfinished transaction; redelivery sends once.
//! - **after the relay accepted, before the commit** (kill, database gone at commit, or the 250
//!   reply lost to a timeout): the email is out but no row committed; the redelivery sends it
//!   again with the SAME Message-ID. This is the one documented duplicate, identifiable by that
//!   header (recipients' mail clients and the invariant checker fold it). Making it impossible
//!   would need a relay that deduplicates by Message-ID; SMTP has no such contract.
//! - after the commit, before the ack: the redelivery finds the processed-event record and is
//!   acknowledged without sending.
//! - the relay down for a long time: every event keeps being retried (no delivery limit here, see
//!   [`crate::app`]); nothing is lost and nothing is dead-lettered for it.
//!
//! Concurrent copies of one event (a redelivery while the first attempt still talks to the
//! relay) wait on the processed-event row lock and then see the first one's commit, so they
//! never send in parallel. Addresses are redacted in every log line, including SMTP error text
//! the runner logs.

use std::sync::Arc;

use chrono::Utc;
use jetmart_kit::time::{from_timestamp, timestamp};
use jetmart_proto::common::v1::{Money, OrderLine, Shortage};
use jetmart_proto::notification::v1::{NotificationFailed, NotificationSent, NotificationTemplate};
use jetmart_proto::order::v1::{CancelReason, OrderCancelled, OrderConfirmed};
use jetmart_proto::survey::v1::SurveyRequested;
use jetmart_runtime::consumer::{HandlerError, PgHandler};
use jetmart_runtime::{IncomingEvent, OutgoingEvent};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::NAME;
use crate::domain::{
    self, CancellationReason, EmailError, EmailTemplate, LineItem, OrderCancelledEmail,
    OrderSummary, Redacted, RenderedEmail, ShortageItem, SmtpFailure, SurveyInvitationEmail,
    redact_email,
};
use crate::mailer::Mailer;
use crate::store::{self, NewNotification, Status, StoreError};

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        HandlerError::transient(e)
    }
}

/// Consumes the three event types on both streams (ORDER and SURVEY).
#[derive(Debug, Clone)]
pub struct EmailHandler {
    mailer: Mailer,
    metrics: Arc<EmailMetrics>,
}

impl EmailHandler {
    pub fn new(mailer: Mailer, metrics: Arc<EmailMetrics>) -> Self {
        Self { mailer, metrics }
    }
}

/// What an event asks to send.
struct Email {
    template: EmailTemplate,
    order_id: Uuid,
    customer_id: String,
    survey_id: Option<String>,
    recipient: String,
    /// An email that cannot be rendered is recorded as failed, not dead-lettered.
    rendered: Result<RenderedEmail, EmailError>,
}

impl PgHandler for EmailHandler {
    fn handles(&self, event_type: &str) -> bool {
        crate::CONSUMES.handles(event_type)
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &IncomingEvent,
    ) -> Result<(), HandlerError> {
        let email = email_for(event)?;
        let template = email.template.name();
        let message_id = domain::message_id(event.meta.id, email.template);
        let notification_id = Uuid::now_v7();
        let attempts = i32::try_from(event.delivered.max(1)).unwrap_or(i32::MAX);
        let claimed = store::claim(
            tx,
            &NewNotification {
                notification_id,
                event_id: event.meta.id,
                template,
                order_id: email.order_id,
                customer_id: &email.customer_id,
                survey_id: email.survey_id.as_deref(),
                recipient: &email.recipient,
                message_id: &message_id,
                attempts,
            },
        )
        .await?;
        if !claimed {
            tracing::info!(event_id = %event.meta.id, template, "email already decided, not sending");
            self.metrics.count(template, EmailOutcome::Duplicate);
            return Ok(());
        }

        let outcome = match &email.rendered {
            Ok(rendered) => {
                let mut tags = vec![
                    ("X-Jetmart-Order-Id", email.order_id.to_string()),
                    ("X-Jetmart-Template", template.to_owned()),
                ];
                if let Some(survey) = &email.survey_id {
                    tags.push(("X-Jetmart-Survey-Id", survey.clone()));
                }
                self.mailer
                    .send(&email.recipient, &message_id, rendered, &tags)
                    .await
            }
            Err(e) => Err(SmtpFailure::InvalidMessage(format!("rendering: {e}"))),
        };
        let to = Redacted(&email.recipient);
        match outcome {
            Ok(()) => {
                store::settle(tx, notification_id, Status::Sent, None).await?;
                let sent = NotificationSent {
                    notification_id: notification_id.to_string(),
                    order_id: email.order_id.to_string(),
                    customer_id: email.customer_id.clone(),
                    template: proto_template(email.template) as i32,
                    message_id: message_id.clone(),
                    recipient: email.recipient.clone(),
                    survey_id: email.survey_id.clone().unwrap_or_default(),
                    sent_at: Some(timestamp(Utc::now())),
                };
                let out = OutgoingEvent::new(NAME, &notification_id.to_string(), &sent)
                    .caused_by(&event.meta);
                jetmart_runtime::outbox::enqueue(tx, &[out]).await?;
                tracing::info!(order_id = %email.order_id, template, %to, message_id, "email sent");
                self.metrics.count(template, EmailOutcome::Sent);
                Ok(())
            }
            Err(failure) if failure.is_transient() => {
                let error = scrub(&describe(&failure), &email.recipient);
                self.metrics.count(template, EmailOutcome::Retried);
                // The runner logs this text: it carries no address.
                Err(HandlerError::transient(format!(
                    "{template} to {to} not sent: {error}"
                )))
            }
            Err(failure) => {
                let error = describe(&failure);
                store::settle(tx, notification_id, Status::Failed, Some(&error)).await?;
                let failed = NotificationFailed {
                    notification_id: notification_id.to_string(),
                    order_id: email.order_id.to_string(),
                    customer_id: email.customer_id.clone(),
                    template: proto_template(email.template) as i32,
                    message_id: message_id.clone(),
                    recipient: email.recipient.clone(),
                    survey_id: email.survey_id.clone().unwrap_or_default(),
                    error: error.clone(),
                    permanent: true,
                    attempts,
                    failed_at: Some(timestamp(Utc::now())),
                };
                let out = OutgoingEvent::new(NAME, &notification_id.to_string(), &failed)
                    .caused_by(&event.meta);
                jetmart_runtime::outbox::enqueue(tx, &[out]).await?;
                let error = scrub(&error, &email.recipient);
                tracing::warn!(order_id = %email.order_id, template, %to, message_id, error, "email failed for good");
                self.metrics.count(template, EmailOutcome::Failed);
                Ok(())
            }
        }
    }
}

fn email_for(event: &IncomingEvent) -> Result<Email, HandlerError> {
    if event.is::<OrderConfirmed>() {
        let e: OrderConfirmed = event.decode()?;
        let order = order_summary(&e.order_id, &e.lines, e.total.as_ref())?;
        Ok(Email {
            template: EmailTemplate::OrderConfirmed,
            order_id: order.order_id,
            customer_id: e.customer_id,
            survey_id: None,
            recipient: e.customer_email,
            rendered: domain::render_order_confirmed(&order),
        })
    } else if event.is::<OrderCancelled>() {
        let e: OrderCancelled = event.decode()?;
        let order = order_summary(&e.order_id, &e.lines, e.total.as_ref())?;
        let reason = match e.reason() {
            CancelReason::OutOfStock => CancellationReason::OutOfStock,
            CancelReason::PaymentDeclined => CancellationReason::PaymentDeclined,
            CancelReason::Customer => CancellationReason::Customer,
            CancelReason::Unspecified => CancellationReason::Other,
        };
        let shortages = e.shortages.iter().map(shortage).collect();
        Ok(Email {
            template: EmailTemplate::OrderCancelled,
            order_id: order.order_id,
            customer_id: e.customer_id,
            survey_id: None,
            recipient: e.customer_email,
            rendered: domain::render_order_cancelled(&OrderCancelledEmail {
                order,
                reason,
                shortages,
            }),
        })
    } else {
        let e: SurveyRequested = event.decode()?;
        let order_id = parse_uuid("order id", &e.order_id)?;
        let expires_at = e
            .expires_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| {
                HandlerError::permanent(format!("survey {} has no valid expires_at", e.survey_id))
            })?;
        Ok(Email {
            template: EmailTemplate::SurveyInvitation,
            order_id,
            customer_id: e.customer_id,
            survey_id: Some(e.survey_id),
            recipient: e.customer_email,
            rendered: domain::render_survey_invitation(&SurveyInvitationEmail {
                order_id,
                survey_url: e.link,
                expires_at,
            }),
        })
    }
}

fn parse_uuid(what: &str, raw: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(raw)
        .map_err(|_| HandlerError::permanent(format!("{what} {raw:?} is not a UUID")))
}

/// The order as the email shows it. A malformed order event is a producer bug: dead letter.
fn order_summary(
    order_id: &str,
    lines: &[OrderLine],
    total: Option<&Money>,
) -> Result<OrderSummary, HandlerError> {
    let id = parse_uuid("order id", order_id)?;
    let bad = |problem: String| HandlerError::permanent(format!("order {id}: {problem}"));
    let total = total.ok_or_else(|| bad("no total".into()))?;
    let currency = total.currency.clone();
    let lines = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let quantity = u64::try_from(l.quantity)
                .map_err(|_| bad(format!("line {i}: negative quantity")))?;
            let unit = l
                .unit_price
                .as_ref()
                .ok_or_else(|| bad(format!("line {i}: no unit price")))?;
            if unit.currency != currency {
                return Err(bad(format!(
                    "line {i}: price in {:?}, order in {currency:?}",
                    unit.currency
                )));
            }
            let line_total = unit
                .amount_minor
                .checked_mul(i64::from(l.quantity))
                .ok_or_else(|| bad(format!("line {i}: total overflows")))?;
            Ok(LineItem {
                sku: l.sku.clone(),
                quantity,
                unit_price_minor: unit.amount_minor,
                line_total_minor: line_total,
            })
        })
        .collect::<Result<Vec<_>, HandlerError>>()?;
    Ok(OrderSummary {
        order_id: id,
        currency,
        lines,
        total_minor: total.amount_minor,
    })
}

fn shortage(s: &Shortage) -> ShortageItem {
    ShortageItem {
        sku: s.sku.clone(),
        requested: u64::try_from(s.requested).unwrap_or(0),
        available: u64::try_from(s.available).unwrap_or(0),
    }
}

pub fn proto_template(t: EmailTemplate) -> NotificationTemplate {
    match t {
        EmailTemplate::OrderConfirmed => NotificationTemplate::OrderConfirmation,
        EmailTemplate::OrderCancelled => NotificationTemplate::OrderCancellation,
        EmailTemplate::SurveyInvitation => NotificationTemplate::SurveyInvitation,
    }
}

/// The failure as stored and announced.
fn describe(f: &SmtpFailure) -> String {
    match f {
        SmtpFailure::ConnectionRefused => "connection refused".into(),
        SmtpFailure::Timeout => "timed out".into(),
        SmtpFailure::Network(m) => m.clone(),
        SmtpFailure::Tls(m) => format!("TLS: {m}"),
        SmtpFailure::Reply { code, message } if message.contains(&code.to_string()) => {
            message.clone()
        }
        SmtpFailure::Reply { code, message } => format!("{code} {message}"),
        SmtpFailure::InvalidMessage(m) => format!("invalid message: {m}"),
    }
}

/// `text` with every occurrence of the address redacted (relays quote it in their replies).
fn scrub(text: &str, address: &str) -> String {
    if address.is_empty() {
        text.to_owned()
    } else {
        text.replace(address, &redact_email(address))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum EmailOutcome {
    Sent,
    Failed,
    Retried,
    Duplicate,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EmailLabels {
    pub template: String,
    pub outcome: EmailOutcome,
}

/// `jetmart_notification_emails_total{template, outcome}`.
#[derive(Debug, Default)]
pub struct EmailMetrics {
    pub emails: Family<EmailLabels, Counter>,
}

impl EmailMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self::default();
        registry.register(
            "jetmart_notification_emails",
            "Emails by template and outcome (retried: a transient SMTP failure)",
            metrics.emails.clone(),
        );
        Arc::new(metrics)
    }

    fn count(&self, template: &str, outcome: EmailOutcome) {
        self.emails
            .get_or_create(&EmailLabels {
                template: template.to_owned(),
                outcome,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(minor: i64, currency: &str) -> Option<Money> {
        Some(Money {
            amount_minor: minor,
            currency: currency.into(),
        })
    }

    #[test]
    fn order_lines_become_email_lines_with_totals() {
        let id = Uuid::now_v7().to_string();
        let lines = vec![OrderLine {
            sku: "A".into(),
            quantity: 3,
            unit_price: money(250, "EUR"),
        }];
        let s = order_summary(&id, &lines, money(750, "EUR").as_ref()).unwrap();
        assert_eq!(s.currency, "EUR");
        assert_eq!(s.lines[0].line_total_minor, 750);
        assert_eq!(s.total_minor, 750);
    }

    #[test]
    fn malformed_orders_are_permanent() {
        let id = Uuid::now_v7().to_string();
        let line = |q, price| OrderLine {
            sku: "A".into(),
            quantity: q,
            unit_price: price,
        };
        let total = money(1, "EUR");
        for (order_id, lines, total) in [
            ("nope".to_owned(), vec![], total.clone()),
            (id.clone(), vec![], None),
            (id.clone(), vec![line(-1, money(1, "EUR"))], total.clone()),
            (id.clone(), vec![line(1, None)], total.clone()),
            (id.clone(), vec![line(1, money(1, "USD"))], total.clone()),
            (
                id.clone(),
                vec![line(2, money(i64::MAX, "EUR"))],
                total.clone(),
            ),
        ] {
            let r = order_summary(&order_id, &lines, total.as_ref());
            assert!(matches!(r, Err(HandlerError::Permanent(_))), "{lines:?}");
        }
    }

    #[test]
    fn failures_are_described_without_the_address_in_logs() {
        let f = SmtpFailure::Reply {
            code: 550,
            message: "permanent error (550): 5.1.1 <jane@example.com> unknown".into(),
        };
        let text = describe(&f);
        assert!(text.contains("550"));
        let logged = scrub(&text, "jane@example.com");
        assert!(!logged.contains("jane@"), "{logged}");
        assert!(logged.contains("j***@example.com"));
        assert_eq!(
            describe(&SmtpFailure::Reply {
                code: 451,
                message: "busy".into()
            }),
            "451 busy"
        );
        assert_eq!(
            describe(&SmtpFailure::ConnectionRefused),
            "connection refused"
        );
    }
}
