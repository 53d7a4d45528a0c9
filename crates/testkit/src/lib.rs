//! Throwaway servers for jetmart's tests: NATS (single node and JetStream cluster), Postgres,
//! Redis and an SMTP sink.
//!
//! Every server runs on a random loopback port (never the machine's own 4222/5432/6379) with
//! its data under `$TMPDIR/jetmart-testkit/<pid>-...`, is ready when it answers a real request
//! (polled, never a fixed sleep), and is killed and removed on drop. Children get a parent-death
//! signal, so they die with the test process even when it is SIGKILLed; dirs left by dead test
//! processes are swept by the next run.
//!
//! Binaries come from [`tools`] (`scripts/bootstrap.sh` installs them).
//!
//! ```no_run
//! # async fn demo() -> jetmart_testkit::Result<()> {
//! let nats = jetmart_testkit::NatsServer::start().await?;
//! let db = jetmart_testkit::pg::fresh_database().await?;
//! let pool = db.pool().await?;
//! let smtp = jetmart_testkit::SmtpSink::start().await?;
//! # let _ = (nats, pool, smtp); Ok(()) }
//! ```
//!
//! Environment: `JETMART_NATS_SERVER`, `JETMART_PG_BIN`, `JETMART_REDIS_SERVER`,
//! `JETMART_PYTHON` override the binaries; `JETMART_TESTKIT_READY_SECS` the readiness timeouts;
//! `JETMART_TESTKIT_KEEP=1` keeps dirs and databases for a post-mortem.

pub mod child;
pub mod error;
pub mod http;
pub mod mail;
pub mod nats;
pub mod pg;
mod process;
pub mod redis;
pub mod smtp;
pub mod tools;
mod wait;

pub use error::{Result, TestkitError};
pub use mail::ReceivedMail;
pub use nats::{NatsCluster, NatsServer};
pub use pg::{PgCluster, TestDatabase, fresh_database};
pub use process::free_port;
pub use redis::RedisServer;
pub use smtp::{SmtpMode, SmtpSink};
pub use wait::wait_until;
