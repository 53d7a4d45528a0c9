//! jetmart inventory service: keeps stock per SKU and reserves every line of an order or none.
pub mod domain;
