//! Transactional outbox and its relay.
//!
//! A service calls [`enqueue`] inside the transaction that changes its state, so the event
//! exists if and only if the change committed. The [`Relay`] publishes unpublished rows to
//! JetStream with `Nats-Msg-Id = ce-id`, awaits every ack, then marks the rows. A crash between
//! publish and mark re-sends the same ids, which JetStream's duplicate window drops.
//!
//! Ordering: one relay at a time holds a transaction-scoped advisory lock for a round (other
//! replicas wait for the next notification), rounds run in sequence order, and a round carries
//! at most one event per aggregate. A publish that fails therefore never lets a later event of
//! the same aggregate overtake it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use futures::future::join_all;
use sqlx::{PgConnection, PgPool, Row, postgres::PgListener};
use tokio_util::sync::CancellationToken;

use crate::envelope::{OutgoingEvent, to_nats_headers};
use crate::metrics::RuntimeMetrics;

/// Postgres NOTIFY channel the outbox trigger signals on commit.
pub const CHANNEL: &str = "jetmart_outbox";
/// Advisory lock key of the relay leader for one round ("jetmart_outbox" as bytes, truncated).
const RELAY_LOCK: i64 = 0x6a65_746d_6172_746f;

/// Writes `events` to the outbox on the caller's transaction. Write them after the state change
/// they announce, so that two transactions touching one aggregate get outbox sequence numbers
/// in commit order.
pub async fn enqueue(conn: &mut PgConnection, events: &[OutgoingEvent]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(events.len());
    let mut subjects = Vec::with_capacity(events.len());
    let mut aggregates = Vec::with_capacity(events.len());
    let mut headers = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    for e in events {
        ids.push(e.id);
        subjects.push(e.subject.clone());
        aggregates.push(e.aggregate_id.clone());
        headers.push(serde_json::to_string(&e.headers).expect("string map serializes"));
        payloads.push(e.payload.to_vec());
    }
    sqlx::query(
        "INSERT INTO jetmart_outbox (event_id, subject, aggregate_id, headers, payload)
         SELECT id, subject, aggregate_id, headers::jsonb, payload
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[])
              WITH ORDINALITY AS t(id, subject, aggregate_id, headers, payload, n)
         ORDER BY n",
    )
    .bind(&ids)
    .bind(&subjects)
    .bind(&aggregates)
    .bind(&headers)
    .bind(&payloads)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{failed} of {attempted} publishes failed, last: {last}")]
    Publish {
        failed: usize,
        attempted: usize,
        last: String,
    },
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows read per round.
    pub batch_size: i64,
    /// Safety net if a notification is missed (listener reconnecting).
    pub fallback_poll: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub publish_timeout: Duration,
    /// Published rows are kept this long, then deleted.
    pub retention: Duration,
    /// On shutdown, keep publishing what is committed for at most this long.
    pub flush_timeout: Duration,
    /// Kill the process right after publishing, before marking rows (crash tests only).
    #[cfg(feature = "failpoints")]
    pub crash_after_publish: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            fallback_poll: Duration::from_secs(2),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(10),
            retention: Duration::from_secs(24 * 3600),
            flush_timeout: Duration::from_secs(5),
            #[cfg(feature = "failpoints")]
            crash_after_publish: false,
        }
    }
}

/// What one relay round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Another replica holds the relay lock.
    NotLeader,
    /// Published this many rows; `more` when rows were left for the next round.
    Published { count: usize, more: bool },
}

#[derive(Clone)]
pub struct Relay {
    pool: PgPool,
    js: jetstream::Context,
    config: RelayConfig,
    metrics: Arc<RuntimeMetrics>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

struct Pending {
    seq: i64,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: Bytes,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        js: jetstream::Context,
        config: RelayConfig,
        metrics: Arc<RuntimeMetrics>,
    ) -> Self {
        Self {
            pool,
            js,
            config,
            metrics,
        }
    }

    /// Publishes until `shutdown`, woken by NOTIFY, retrying with backoff while NATS or
    /// Postgres is away; then flushes what is committed for up to `flush_timeout`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener = None;
        let mut backoff = self.config.retry_initial;
        let mut rounds: u64 = 0;
        while !shutdown.is_cancelled() {
            // Every await on Postgres or NATS races the shutdown: with either gone (a terminal's
            // Ctrl-C reaches the servers too) a connect or a round can take its whole timeout.
            // A round cut short rolls back; what it published is sent again by the flush below
            // (or the next relay) with the same Nats-Msg-Id, which JetStream drops as a duplicate.
            if listener.is_none() {
                listener = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    l = self.listen() => l,
                };
            }
            let round = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.round() => r,
            };
            let wait = match round {
                Ok(Round::Published { more: true, .. }) => {
                    backoff = self.config.retry_initial;
                    continue;
                }
                Ok(_) => {
                    backoff = self.config.retry_initial;
                    None
                }
                Err(e) => {
                    self.metrics.outbox_round_failures.inc();
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay round failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.config.retry_max);
                    Some(wait)
                }
            };
            rounds += 1;
            if rounds.is_multiple_of(1000) {
                self.delete_old().await;
            }
            match wait {
                Some(delay) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                None => {
                    let notified = async {
                        match listener.as_mut() {
                            Some(l) => l.recv().await.map(|_| ()),
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        r = notified => if r.is_err() { listener = None },
                        _ = tokio::time::sleep(self.config.fallback_poll) => {}
                    }
                }
            }
        }
        self.flush(self.config.flush_timeout).await;
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut l = PgListener::connect_with(&self.pool).await.ok()?;
        l.listen(CHANNEL).await.ok()?;
        Some(l)
    }

    /// Publishes every committed row, for at most `timeout` (counting what is left included).
    /// Returns the rows left unpublished: `Some(0)` when it emptied the outbox, `None` when it
    /// could not tell (Postgres unreachable).
    pub async fn flush(&self, timeout: Duration) -> Option<usize> {
        let start = tokio::time::Instant::now();
        // Counting the rest needs Postgres too; keep a slice of the time for it.
        let count_time = (timeout / 10).min(Duration::from_millis(500));
        let deadline = start + timeout - count_time;
        let mut backoff = self.config.retry_initial;
        loop {
            match tokio::time::timeout_at(deadline, self.round()).await {
                Ok(Ok(Round::Published { more: false, .. })) => return Some(0),
                Ok(Ok(Round::Published { more: true, .. })) => {}
                Ok(Ok(Round::NotLeader)) | Ok(Err(_)) => {
                    if tokio::time::timeout_at(deadline, tokio::time::sleep(backoff))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    backoff = (backoff * 2).min(self.config.retry_max);
                }
                Err(_) => break,
            }
        }
        let left = tokio::time::timeout(count_time, self.backlog())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|n| n.max(0) as usize);
        match left {
            Some(left) => tracing::warn!(
                left,
                "outbox flush deadline reached; the next relay publishes the rest"
            ),
            None => tracing::warn!(
                "outbox flush deadline reached, Postgres unreachable; the next relay publishes the rest"
            ),
        }
        left
    }

    /// Unpublished rows.
    pub async fn backlog(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT count(*) FROM jetmart_outbox WHERE published_at IS NULL")
            .fetch_one(&self.pool)
            .await
    }

    /// One round: take the lock, publish a batch (one event per aggregate), await the acks,
    /// mark what was acknowledged, commit.
    pub async fn round(&self) -> Result<Round, RelayError> {
        let mut tx = self.pool.begin().await?;
        let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !leader {
            return Ok(Round::NotLeader);
        }
        let rows = sqlx::query(
            "SELECT seq, aggregate_id, subject, headers::text AS headers, payload
             FROM jetmart_outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(self.config.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        let total = rows.len();
        let mut aggregates = HashSet::new();
        let mut batch = Vec::with_capacity(total);
        for row in rows {
            let aggregate: String = row.try_get("aggregate_id")?;
            // A later event of an aggregate already in this round waits for the next round.
            if !aggregates.insert(aggregate) {
                continue;
            }
            let headers: String = row.try_get("headers")?;
            let headers: std::collections::BTreeMap<String, String> =
                serde_json::from_str(&headers).unwrap_or_default();
            batch.push(Pending {
                seq: row.try_get("seq")?,
                subject: row.try_get("subject")?,
                headers: to_nats_headers(&headers),
                payload: Bytes::from(row.try_get::<Vec<u8>, _>("payload")?),
            });
        }
        let more = total as i64 == self.config.batch_size || batch.len() < total;
        if batch.is_empty() {
            self.metrics.outbox_backlog.set(0);
            return Ok(Round::Published {
                count: 0,
                more: false,
            });
        }

        // Pipelined: send every publish, then await every ack.
        let mut sent = Vec::with_capacity(batch.len());
        let mut failed = 0;
        let mut last_error = String::new();
        for p in &batch {
            let msg = PublishMessage::build()
                .headers(p.headers.clone())
                .payload(p.payload.clone());
            match self.js.send_publish(p.subject.clone(), msg).await {
                Ok(ack) => sent.push((p.seq, ack)),
                Err(e) => {
                    failed += 1;
                    last_error = e.to_string();
                }
            }
        }
        let timeout = self.config.publish_timeout;
        let acks = join_all(
            sent.into_iter()
                .map(|(seq, ack)| async move { (seq, tokio::time::timeout(timeout, ack).await) }),
        )
        .await;
        let mut published = Vec::with_capacity(acks.len());
        let mut duplicates = Vec::new();
        for (seq, result) in acks {
            match result {
                Ok(Ok(ack)) => {
                    if ack.duplicate {
                        self.metrics.outbox_deduplicated.inc();
                        duplicates.push(seq);
                    }
                    published.push(seq);
                }
                Ok(Err(e)) => {
                    failed += 1;
                    last_error = e.to_string();
                }
                Err(_) => {
                    failed += 1;
                    last_error = "publish ack timed out".into();
                }
            }
        }

        #[cfg(feature = "failpoints")]
        if self.config.crash_after_publish && !published.is_empty() {
            crate::failpoint::kill_self("relay: published, not marked");
        }

        if !published.is_empty() {
            sqlx::query(
                "UPDATE jetmart_outbox SET published_at = now(), duplicate = (seq = ANY($2)) WHERE seq = ANY($1)",
            )
            .bind(&published)
            .bind(&duplicates)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.metrics.outbox_published.inc_by(published.len() as u64);
        if !more {
            self.metrics
                .outbox_backlog
                .set((total - published.len()) as i64);
        } else if let Ok(n) = self.backlog().await {
            self.metrics.outbox_backlog.set(n);
        }
        if failed > 0 {
            return Err(RelayError::Publish {
                failed,
                attempted: batch.len(),
                last: last_error,
            });
        }
        Ok(Round::Published {
            count: published.len(),
            more,
        })
    }

    async fn delete_old(&self) {
        let r = sqlx::query(
            "DELETE FROM jetmart_outbox WHERE published_at < now() - make_interval(secs => $1)",
        )
        .bind(self.config.retention.as_secs_f64())
        .execute(&self.pool)
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "outbox clean-up failed");
        }
    }
}
