//! jetmart survey service: decides who gets a post-purchase survey and collects the answers.
//!
//! - [`domain`]: pure rules (eligibility, sampling, tokens, answer validation, NPS).
//! - [`store`]: customer history, invitations (token hashes only) and responses in Postgres.
//! - [`handlers`]: `order.confirmed` -> the rules -> `survey.requested` through the outbox.
//! - [`surveys`]: reading surveys and recording answers, shared by [`pages`] (the HTML form at
//!   `/s/<token>`) and [`grpc`] (`SurveyService`); [`error`] maps failures to gRPC statuses.
//! - [`app`]: wiring; `main` only parses config and calls it.

use std::sync::LazyLock;

use jetmart_kit::consumes::Consumes;
use jetmart_proto::order;

/// Service name: `ce-source`, durable consumer name, NATS user, telemetry name.
pub const NAME: &str = "survey";

/// The events survey consumes, under durable name [`NAME`].
pub static CONSUMES: LazyLock<Consumes> =
    LazyLock::new(|| Consumes::new().event::<order::v1::OrderConfirmed>());

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod handlers;
pub mod pages;
pub mod store;
pub mod surveys;
