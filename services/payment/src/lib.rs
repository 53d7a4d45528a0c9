//! jetmart payment service: authorizes on `inventory.reserved`, captures on `order.confirmed`,
//! voids on `order.cancelled`, through a payment gateway (simulated for now) guarded by retries
//! and a circuit breaker; serves `PaymentService.GetPayment`.

use std::sync::LazyLock;

use jetmart_kit::consumes::Consumes;
use jetmart_proto::{inventory, order};

/// Service name: `ce-source`, durable consumer name, NATS user, telemetry name.
pub const NAME: &str = "payment";

/// The events payment consumes, under durable name [`NAME`].
pub static CONSUMES: LazyLock<Consumes> = LazyLock::new(|| {
    Consumes::new()
        .event::<inventory::v1::StockReserved>()
        .event::<order::v1::OrderConfirmed>()
        .event::<order::v1::OrderCancelled>()
});

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod gateway;
pub mod grpc;
pub mod handlers;
pub mod store;
