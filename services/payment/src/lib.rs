//! jetmart payment service: authorizes, captures and voids payments through a gateway.
pub mod domain;
