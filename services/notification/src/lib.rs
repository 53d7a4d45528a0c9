//! jetmart notification service: sends the order and survey emails, exactly one per (event,
//! template) outside the kill window documented in [`handlers`].
//!
//! - [`domain`]: pure rules (templates, rendering, money, Message-IDs, redaction, SMTP outcomes).
//! - [`mailer`]: the SMTP client (lettre, pooled) and its error mapping.
//! - [`store`]: the notifications table.
//! - [`handlers`]: reactions to `order.confirmed`, `order.cancelled` and `survey.requested`.
//! - [`grpc`]: the `NotificationService` API; [`error`] maps failures to gRPC statuses in one place.
//! - [`app`]: wiring; `main` only parses config and calls it.

use std::sync::LazyLock;

use jetmart_kit::consumes::Consumes;
use jetmart_proto::{order, survey};

/// Service name: `ce-source`, durable consumer name, NATS user, telemetry name.
pub const NAME: &str = "notification";

/// The events notification consumes, under durable name [`NAME`].
pub static CONSUMES: LazyLock<Consumes> = LazyLock::new(|| {
    Consumes::new()
        .event::<order::v1::OrderConfirmed>()
        .event::<order::v1::OrderCancelled>()
        .event::<survey::v1::SurveyRequested>()
});

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod handlers;
pub mod mailer;
pub mod store;
