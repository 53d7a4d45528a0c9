//! jetmart notification service: sends the order and survey emails.
pub mod domain;
