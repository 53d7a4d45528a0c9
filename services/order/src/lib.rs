//! jetmart order service: takes orders, validates them and drives them to CONFIRMED or CANCELLED.
pub mod domain;
