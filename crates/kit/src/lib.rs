//! What every jetmart service binary shares: configuration, telemetry, connections, the ops
//! HTTP endpoints, the gRPC server with health and reflection, and graceful shutdown.
//!
//! A service's `main` parses its config with [`config::parse_or_exit`], calls
//! [`telemetry::init`], and hands [`shutdown::on_signal`]'s token to its library `run`.

pub mod config;
pub mod db;
pub mod grpc;
pub mod nats;
pub mod ops;
pub mod retry;
pub mod service;
pub mod shutdown;
pub mod tasks;
pub mod telemetry;

pub use config::{CommonArgs, ConfigError};

pub use service::{Service, StartError};
pub use tasks::{ServiceError, Tasks};
