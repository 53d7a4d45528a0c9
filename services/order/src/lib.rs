//! jetmart order service: takes orders, validates them and drives them to CONFIRMED or
//! CANCELLED.
//!
//! - [`domain`]: pure rules (validation, money, idempotency, the event-sourced aggregate).
//! - [`store`]: the event store, idempotency keys and the outbox, in one transaction.
//! - [`projection`]: the read model behind GetOrder/ListOrders, fed from the ORDER stream.
//! - [`handlers`]: reactions to inventory and payment events.
//! - [`grpc`]: the `OrderService` API; [`error`] maps failures to gRPC statuses in one place.
//! - [`app`]: wiring; `main` only parses config and calls it.

/// Service name: `ce-source`, durable consumer name, NATS user, telemetry name.
pub const NAME: &str = "order";

pub mod app;
pub mod config;
pub mod convert;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod handlers;
pub mod projection;
pub mod store;
