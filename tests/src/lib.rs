//! End-to-end tests of jetmart against real servers, and the fixtures they share.

pub mod fixtures;
pub mod limits;
pub mod system;
