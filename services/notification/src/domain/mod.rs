//! Pure domain logic of the notification service: email templates and their renderer, money
//! formatting, deterministic Message-IDs, address redaction for logs, and the classification
//! of SMTP failures. No SMTP client, NATS or database types here.
//!
//! Typical send on `order.confirmed`: build an [`OrderSummary`] from the event,
//! [`render_order_confirmed`], set the Message-ID with [`message_id()`] of (event id, template), send;
//! on failure, [`SmtpFailure::class`] decides between retry and `notification.failed`.

pub mod message_id;
pub mod money;
pub mod redact;
pub mod render;
pub mod smtp;
pub mod templates;

pub use message_id::message_id;
pub use money::{UnknownCurrency, format_money};
pub use redact::{Redacted, redact_email};
pub use smtp::{FailureClass, SmtpFailure};
pub use templates::{
    CancellationReason, EmailError, EmailTemplate, LineItem, OrderCancelledEmail, OrderSummary,
    RenderedEmail, ShortageItem, SurveyInvitationEmail, render_order_cancelled,
    render_order_confirmed, render_survey_invitation,
};
