//! jetmart payment service: authorizes on `inventory.reserved`, captures on `order.confirmed`,
//! voids on `order.cancelled`, through a payment gateway (simulated for now) guarded by retries
//! and a circuit breaker; serves `PaymentService.GetPayment`.

/// Service name: `ce-source`, durable consumer name, NATS user, telemetry name.
pub const NAME: &str = "payment";

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod gateway;
pub mod grpc;
pub mod handlers;
pub mod store;
