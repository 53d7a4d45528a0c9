//! The jetmart event runtime: what every service needs to exchange events over NATS JetStream
//! without losing or doubling any of them when a process dies at any moment.
//!
//! - [`catalog`]: the streams and their subjects.
//! - [`envelope`]: CloudEvents binary-mode headers, trace and correlation ids.
//! - [`provision`]: idempotent stream and durable consumer set-up.
//! - [`outbox`]: write events in the state-change transaction; the [`outbox::Relay`] publishes them.
//! - [`consumer`]: the exactly-once-effect consumer runner with retries and dead letters.
//! - [`pg_once`]: exactly-once effects for handlers whose state lives in Postgres.
//! - [`redis_once`]: the same exactly-once effect for handlers whose state lives in Redis.
//! - [`backoff`]: the exponential backoff with jitter every retry uses.

pub mod backoff;
pub mod catalog;
pub mod consumer;
pub mod deadletter;
pub mod envelope;
#[cfg(feature = "failpoints")]
mod failpoint;
pub mod metrics;
pub mod outbox;
pub mod pg_once;
pub mod provision;
pub mod redis_once;
mod trace;

pub use envelope::{EventMeta, IncomingEvent, OutgoingEvent};

/// Migrations of the runtime's own tables (outbox, processed-event record). Versions 1-99 are
/// reserved for the runtime; services number theirs from 100 and run both with
/// [`migrate`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the runtime's migrations and the service's own as one ordered list in one
/// `_sqlx_migrations` table, under sqlx's advisory lock so racing replicas are safe.
pub async fn migrate(
    pool: &sqlx::PgPool,
    service: &sqlx::migrate::Migrator,
) -> Result<(), sqlx::migrate::MigrateError> {
    let mut all: Vec<sqlx::migrate::Migration> = MIGRATOR.iter().cloned().collect();
    all.extend(service.iter().cloned());
    all.sort_by_key(|m| m.version);
    // `Migrator`'s fields are public so `migrate!` can build it; sqlx is pinned to 0.8.
    let merged = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(all),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    merged.run(pool).await
}
