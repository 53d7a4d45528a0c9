//! jetmart inventory service: keeps stock per SKU and reserves every line of an order or none.
//!
//! - [`domain`]: pure stock accounting, the all-or-nothing decision, the low-stock rule.
//! - [`store`]: Postgres (row locks in SKU order, compare-and-set writes, the ledger).
//! - [`handlers`]: `order.placed` / `order.cancelled` / `order.confirmed`.
//! - [`adjust`]: AdjustStock (also used by `seed-demo`).
//! - [`cache`]: the Redis availability cache.
//! - [`grpc`]: `InventoryService`; [`error`]: its status mapping.
//! - [`catalog`]: the demo catalog (`jetmart-demo-catalog`) as seed-demo records it.

use std::sync::LazyLock;

use jetmart_kit::consumes::Consumes;
use jetmart_proto::order;

/// Service name: `ce-source`, durable consumer name, NATS user, telemetry name.
pub const NAME: &str = "inventory";

/// The events inventory consumes, under durable name [`NAME`].
pub static CONSUMES: LazyLock<Consumes> = LazyLock::new(|| {
    Consumes::new()
        .event::<order::v1::OrderPlaced>()
        .event::<order::v1::OrderCancelled>()
        .event::<order::v1::OrderConfirmed>()
});

pub mod adjust;
pub mod app;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod handlers;
pub mod seed;
pub mod store;
