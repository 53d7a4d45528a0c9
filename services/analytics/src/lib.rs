//! jetmart analytics: a read model of every stream in Redis, counted exactly once per event,
//! rebuildable by replay without downtime, served by gRPC (GetDashboard) and a live web page.
//!
//! - [`domain`]: pure rules (minute buckets, NPS, low stock) and the snapshot type.
//! - [`keys`]: the Redis key layout; [`generation`]: the pointer to the live keyspace.
//! - [`handlers`]: event -> Redis effects; [`live`]: the durable consumers' processor.
//! - [`rebuild`]: replay into a new generation and swap it in (module docs explain the design).
//! - [`read_model`], [`ops`], [`dashboard`]: reading the snapshot and JetStream's state.
//! - [`grpc`] + [`convert`] + [`error`]: `AnalyticsService`; [`web`]: the page, JSON and SSE.
//! - [`app`]: wiring; `main` only parses config and calls it.

use std::sync::LazyLock;

use jetmart_kit::consumes::Consumes;
use jetmart_runtime::catalog;

/// Service name: `ce-source`, durable consumer name, NATS user, telemetry name.
pub const NAME: &str = "analytics";

/// The events analytics consumes, under durable name [`NAME`]: every business stream, whole.
pub static CONSUMES: LazyLock<Consumes> = LazyLock::new(|| {
    catalog::BUSINESS_STREAMS
        .iter()
        .fold(Consumes::new(), |c, s| c.stream(*s))
});

pub mod app;
pub mod config;
pub mod convert;
pub mod dashboard;
pub mod domain;
pub mod error;
pub mod generation;
pub mod grpc;
pub mod handlers;
pub mod keys;
pub mod live;
pub mod ops;
pub mod read_model;
pub mod rebuild;
pub mod web;
