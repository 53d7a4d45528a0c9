//! What every jetmart service binary shares: configuration, telemetry, connections, the ops
//! HTTP endpoints, the gRPC server with health and reflection, and graceful shutdown.
//!
//! A service's `main` parses its config with [`config::parse_or_exit`], calls
//! [`telemetry::init`], and hands [`shutdown::on_signal`]'s token to its library `run`.

pub mod command;
pub mod config;
pub mod consumes;
pub mod db;
pub mod error;
pub mod grpc;
pub mod html;
pub mod nats;
pub mod ops;
pub mod retry;
pub mod service;
pub mod shutdown;
pub mod tasks;
pub mod telemetry;
pub mod time;

pub use config::{CommonArgs, ConfigError};

pub use service::{Service, StartError};
pub use tasks::{ServiceError, Tasks};

/// The end of a service's `main`: a failure is logged once, then becomes exit code 1.
pub fn exit_code<E: std::fmt::Display>(result: Result<(), E>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "exiting");
            std::process::ExitCode::FAILURE
        }
    }
}
