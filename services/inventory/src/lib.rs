//! jetmart inventory service: keeps stock per SKU and reserves every line of an order or none.
//!
//! - [`domain`]: pure stock accounting, the all-or-nothing decision, the low-stock rule.
//! - [`store`]: Postgres (row locks in SKU order, compare-and-set writes, the ledger).
//! - [`handlers`]: `order.placed` / `order.cancelled` / `order.confirmed`.
//! - [`adjust`]: AdjustStock (also used by `seed-demo`).
//! - [`cache`]: the Redis availability cache.
//! - [`grpc`]: `InventoryService`; [`error`]: its status mapping.
//! - [`catalog`]: the demo catalog shared with the load generator and the local stack.

/// Service name: `ce-source`, durable consumer name, NATS user, telemetry name.
pub const NAME: &str = "inventory";

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
