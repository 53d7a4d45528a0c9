//! The Kubernetes chaos run (`jetmart-kchaos`): under load from the load generator, it deletes
//! random pods of the release's service Deployments and of its NATS StatefulSet with grace
//! period 0 on a seeded schedule, waits for the replacements to be Ready after each kill,
//! drains, and runs the invariant checker.
//!
//! `pods` (which pod, when recovered) and `schedule` (which target when) are pure and
//! unit-tested; `cluster` is the thin kube API layer; `run` strings them together.

pub mod cluster;
pub mod pods;
pub mod run;
pub mod schedule;
