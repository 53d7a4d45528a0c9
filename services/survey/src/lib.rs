//! jetmart survey service: decides who gets a post-purchase survey and collects the answers.
pub mod domain;
