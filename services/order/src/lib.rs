//! jetmart order service: takes orders, validates them and drives them to CONFIRMED or
//! CANCELLED.
//!
//! - [`domain`]: pure rules (validation, money, idempotency, the event-sourced aggregate).
//! - [`store`]: the event store, idempotency keys and the outbox, in one transaction.
//! - [`projection`]: the read model behind GetOrder/ListOrders, fed from the ORDER stream.
//! - [`handlers`]: reactions to inventory and payment events.
//! - [`grpc`]: the `OrderService` API; [`error`] maps failures to gRPC statuses in one place.
//! - [`app`]: wiring; `main` only parses config and calls it.

use std::sync::LazyLock;

use jetmart_kit::consumes::Consumes;
use jetmart_proto::{inventory, payment};
use jetmart_runtime::catalog;

/// Service name: `ce-source`, durable consumer name, NATS user, telemetry name.
pub const NAME: &str = "order";

/// The saga's reads, under durable name [`NAME`]: the verdicts of inventory and payment.
pub static CONSUMES: LazyLock<Consumes> = LazyLock::new(|| {
    Consumes::new()
        .event::<inventory::v1::StockRejected>()
        .event::<payment::v1::PaymentAuthorized>()
        .event::<payment::v1::PaymentDeclined>()
});

/// The read model's reads, under durable name [`projection::CONSUMER`]: the service's own stream.
pub static PROJECTION_CONSUMES: LazyLock<Consumes> =
    LazyLock::new(|| Consumes::new().stream(catalog::ORDER));

pub mod app;
pub mod config;
pub mod convert;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod handlers;
pub mod projection;
pub mod store;
