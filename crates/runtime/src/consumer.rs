//! The consumer runner: one durable pull consumer shared by every replica of a service, with an
//! exactly-once *effect* per event.
//!
//! Each event is handed to a [`Processor`] that applies it at most once (the Postgres one,
//! [`crate::pg_once`], records `(consumer, event id)` in the handler's own transaction; the Redis
//! one, [`crate::redis_once`], checks and applies in one script). The message is acknowledged only after that commit, so a crash anywhere leads to
//! a redelivery that is recognised as a duplicate. Transient failures are nacked with backoff;
//! undecodable messages, permanent failures and messages past the delivery limit are copied to
//! the dead-letter stream, then terminated, and the runner goes on. Events of one aggregate are
//! handled in order within a replica (one lane per aggregate hash); the in-flight bound is the
//! number of lanes times the batch size.
//!
//! Batching (opt-in, [`RunnerConfig::batch`]): what has queued up on a lane while its previous
//! batch ran is applied in one transaction, so a busy consumer pays one commit for many events
//! and an idle one still handles each event at once. If anything in a batch fails, the batch is
//! rolled back and its events are applied one at a time, so each failure is retried or
//! dead-lettered on its own and no event's effect depends on its neighbours.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::deadletter::{self, Reason};
use crate::envelope::{DecodeError, EventMeta, IncomingEvent};
use crate::metrics::{ConsumerLabels, HandledLabels, Outcome, PendingLabels, RuntimeMetrics};
use crate::provision::{self, ConsumerSpec, ProvisionError};

pub use crate::pg_once::{PgHandler, PgProcessor};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying later (database or network trouble, a dependency away).
    #[error("transient: {0}")]
    Transient(BoxError),
    /// Will never succeed (a rule the event breaks): dead-letter it.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The payload is not the message its `ce-type` names: dead-letter it as undecodable.
    #[error("undecodable: {0}")]
    Undecodable(String),
}

impl HandlerError {
    pub fn transient(e: impl Into<BoxError>) -> Self {
        Self::Transient(e.into())
    }
    pub fn permanent(msg: impl std::fmt::Display) -> Self {
        Self::Permanent(msg.to_string())
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        Self::Transient(Box::new(e))
    }
}

impl From<DecodeError> for HandlerError {
    fn from(e: DecodeError) -> Self {
        Self::Undecodable(e.to_string())
    }
}

impl From<redis::RedisError> for HandlerError {
    fn from(e: redis::RedisError) -> Self {
        Self::Transient(Box::new(e))
    }
}

/// Whether a processed event had an effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// Handled before: no effect this time.
    Duplicate,
}

/// Applies an event at most once to some store.
pub trait Processor: Send + Sync + 'static {
    /// Event types (`ce-type`) this processor understands; others are acknowledged and counted.
    fn handles(&self, event_type: &str) -> bool;
    fn process(
        &self,
        consumer: &str,
        event: &IncomingEvent,
    ) -> impl Future<Output = Result<Applied, HandlerError>> + Send;

    /// Applies several events, in order; one outcome per event. The default applies them one
    /// at a time; a store that can do better (one transaction for all) overrides it.
    fn process_batch(
        &self,
        consumer: &str,
        events: &[IncomingEvent],
    ) -> impl Future<Output = Vec<Result<Applied, HandlerError>>> + Send {
        one_at_a_time(self, consumer, events)
    }
}

/// [`Processor::process`] for each event in turn, each in its own span.
pub(crate) async fn one_at_a_time<P: Processor + ?Sized>(
    processor: &P,
    consumer: &str,
    events: &[IncomingEvent],
) -> Vec<Result<Applied, HandlerError>> {
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        out.push(
            processor
                .process(consumer, event)
                .instrument(event_span(consumer, event))
                .await,
        );
    }
    out
}

/// The span an event's handling runs in, continuing the producer's trace.
pub fn event_span(consumer: &str, event: &IncomingEvent) -> tracing::Span {
    let span = tracing::info_span!(
        "handle_event",
        consumer,
        event_id = %event.meta.id,
        event_type = %event.meta.event_type,
        aggregate_id = %event.meta.aggregate_id,
        delivered = event.delivered,
    );
    crate::trace::continue_from(&span, event.meta.traceparent.as_deref());
    span
}

/// Runner settings.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub consumer: ConsumerSpec,
    /// Concurrent handlers (one lane each); with `batch`, bounds what this replica holds un-acked.
    pub lanes: usize,
    /// Most events a lane applies in one call of [`Processor::process_batch`] (1: no batching).
    /// Only for handlers whose whole effect is in the transaction: a failed batch is rolled back
    /// and re-run one event at a time, so any effect outside it would happen twice.
    pub batch: usize,
    /// Deliveries before a transiently failing message is dead-lettered.
    pub max_deliver: i64,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How often the consumer's pending count is read for the metric.
    pub pending_every: Duration,
    /// Kill the process right after a commit that applied at least this many events, before
    /// the acks (crash tests only; 0: never).
    #[cfg(feature = "failpoints")]
    pub crash_after_effect: usize,
}

impl RunnerConfig {
    pub fn new(consumer: ConsumerSpec) -> Self {
        Self {
            consumer,
            lanes: 16,
            batch: 1,
            max_deliver: 10,
            retry_initial: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
            pending_every: Duration::from_secs(10),
            #[cfg(feature = "failpoints")]
            crash_after_effect: 0,
        }
    }

    /// Nak delay after the `delivered`-th failed attempt ([`crate::backoff`]).
    pub fn retry_delay(&self, delivered: i64) -> Duration {
        let failures = u32::try_from(delivered.max(1)).unwrap_or(u32::MAX);
        crate::backoff::Backoff::new(self.retry_initial, self.retry_max).delay(failures)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error("cannot pull from {consumer}: {message}")]
    Pull { consumer: String, message: String },
}

pub struct ConsumerRunner<P> {
    js: jetstream::Context,
    config: RunnerConfig,
    processor: Arc<P>,
    metrics: Arc<RuntimeMetrics>,
}

impl<P> std::fmt::Debug for ConsumerRunner<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerRunner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<P: Processor> ConsumerRunner<P> {
    pub fn new(
        js: jetstream::Context,
        config: RunnerConfig,
        processor: P,
        metrics: Arc<RuntimeMetrics>,
    ) -> Self {
        Self {
            js,
            config,
            processor: Arc::new(processor),
            metrics,
        }
    }

    /// Pulls and handles until `shutdown`; then stops pulling, finishes what it holds, and
    /// returns. Messages the client had buffered but not started are redelivered after ack_wait.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RunnerError> {
        let consumer = provision::ensure_consumer(&self.js, &self.config.consumer).await?;
        // Zero-valued series from the start, so rates and "> 0" alerts see this consumer.
        let labels = ConsumerLabels {
            consumer: self.config.consumer.durable.clone(),
        };
        drop(self.metrics.dead_lettered.get_or_create(&labels));
        drop(self.metrics.redelivered.get_or_create(&labels));
        drop(self.metrics.handler_duration.get_or_create(&labels));
        drop(self.metrics.batch_size.get_or_create(&labels));
        let name = self.config.consumer.durable.clone();
        let pull_err = |e: &dyn std::fmt::Display| RunnerError::Pull {
            consumer: name.clone(),
            message: e.to_string(),
        };
        let lanes_n = self.config.lanes.max(1);
        let batch = self.config.batch.max(1);
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(lanes_n * batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| pull_err(&e))?;

        let this = Arc::new(Worker {
            js: self.js.clone(),
            config: self.config.clone(),
            processor: self.processor.clone(),
            metrics: self.metrics.clone(),
        });
        let mut workers = JoinSet::new();
        let mut lanes = Vec::with_capacity(lanes_n);
        for _ in 0..lanes_n {
            // What queues here while the lane is busy becomes its next batch.
            let (tx, mut rx) = mpsc::channel::<jetstream::Message>(batch);
            lanes.push(tx);
            let worker = this.clone();
            workers.spawn(async move {
                let mut held = Vec::with_capacity(batch);
                while rx.recv_many(&mut held, batch).await > 0 {
                    worker.handle(std::mem::take(&mut held)).await;
                }
            });
        }
        let pending_task = tokio::spawn(report_pending(
            consumer,
            self.config.clone(),
            self.metrics.clone(),
            shutdown.clone(),
        ));

        let mut error_streak = 0u32;
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(msg)) => {
                    error_streak = 0;
                    let lane = lane_of(&msg.subject, lanes.len());
                    if lanes[lane].send(msg).await.is_err() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    // Heartbeat misses and server restarts: the client re-issues its pulls.
                    error_streak += 1;
                    tracing::warn!(consumer = %self.config.consumer.durable, error = %e, "pull interrupted");
                    let pause = Duration::from_millis(100 * u64::from(error_streak.min(20)));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                None => break,
            }
        }
        drop(lanes);
        while workers.join_next().await.is_some() {}
        pending_task.abort();
        Ok(())
    }
}

fn lane_of(subject: &str, lanes: usize) -> usize {
    // `<context>.<event>.<aggregate>`: hash the aggregate so its events share a lane.
    let key = subject.splitn(3, '.').nth(2).unwrap_or(subject);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

async fn report_pending(
    mut consumer: jetstream::consumer::PullConsumer,
    config: RunnerConfig,
    metrics: Arc<RuntimeMetrics>,
    shutdown: CancellationToken,
) {
    let labels = PendingLabels {
        consumer: config.consumer.durable.clone(),
        stream: config.consumer.stream.clone(),
    };
    loop {
        if let Ok(info) = consumer.info().await {
            metrics
                .consumer_pending
                .get_or_create(&labels)
                .set(info.num_pending as i64);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.pending_every) => {}
        }
    }
}

struct Worker<P> {
    js: jetstream::Context,
    config: RunnerConfig,
    processor: Arc<P>,
    metrics: Arc<RuntimeMetrics>,
}

impl<P: Processor> Worker<P> {
    fn count(&self, event_type: &str, outcome: Outcome) {
        self.metrics
            .handled
            .get_or_create(&HandledLabels {
                consumer: self.config.consumer.durable.clone(),
                event_type: event_type.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Decodes the envelope; `None` if the message was settled here (undecodable, not ours).
    async fn prepare(&self, msg: &jetstream::Message) -> Option<IncomingEvent> {
        let consumer = self.config.consumer.durable.as_str();
        let (delivered, stream_sequence) = match msg.info() {
            Ok(info) => (info.delivered, info.stream_sequence),
            Err(_) => (1, 0),
        };
        if delivered > 1 {
            self.metrics
                .redelivered
                .get_or_create(&ConsumerLabels {
                    consumer: consumer.into(),
                })
                .inc();
        }
        let meta = match EventMeta::from_headers(msg.headers.as_ref()) {
            Ok(meta) => meta,
            Err(e) => {
                tracing::error!(consumer, subject = %msg.subject, stream_sequence, error = %e, "undecodable envelope");
                self.dead_letter(
                    msg,
                    None,
                    delivered,
                    stream_sequence,
                    Reason::Undecodable,
                    &e.to_string(),
                )
                .await;
                return None;
            }
        };
        if !self.processor.handles(&meta.event_type) {
            // Forward compatibility: a newer producer's event type is not an error.
            tracing::debug!(consumer, event_id = %meta.id, event_type = %meta.event_type, "ignored unknown event type");
            self.count(&meta.event_type, Outcome::Ignored);
            ack(msg, AckKind::Ack).await;
            return None;
        }
        Some(IncomingEvent {
            meta,
            subject: msg.subject.to_string(),
            payload: msg.payload.clone(),
            delivered,
            stream_sequence,
            decoded: Default::default(),
        })
    }

    /// Applies what a lane holds (one transaction when the processor batches), then settles each
    /// message: ack after the commit, nak with backoff, or dead-letter.
    async fn handle(&self, held: Vec<jetstream::Message>) {
        let consumer = self.config.consumer.durable.as_str();
        let mut msgs = Vec::with_capacity(held.len());
        let mut events = Vec::with_capacity(held.len());
        for msg in held {
            if let Some(event) = self.prepare(&msg).await {
                msgs.push(msg);
                events.push(event);
            }
        }
        if events.is_empty() {
            return;
        }
        let labels = ConsumerLabels {
            consumer: consumer.into(),
        };
        let started = Instant::now();
        let results = if let [event] = events.as_slice() {
            vec![
                self.processor
                    .process(consumer, event)
                    .instrument(event_span(consumer, event))
                    .await,
            ]
        } else {
            self.processor.process_batch(consumer, &events).await
        };
        self.metrics
            .handler_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .batch_size
            .get_or_create(&labels)
            .observe(events.len() as f64);
        #[cfg(feature = "failpoints")]
        if self.config.crash_after_effect > 0
            && results
                .iter()
                .filter(|r| matches!(r, Ok(Applied::Applied)))
                .count()
                >= self.config.crash_after_effect
        {
            crate::failpoint::kill_self("consumer: committed, not acked");
        }
        for ((msg, event), result) in msgs.iter().zip(&events).zip(results) {
            self.settle(msg, event, result)
                .instrument(event_span(consumer, event))
                .await;
        }
    }

    async fn settle(
        &self,
        msg: &jetstream::Message,
        event: &IncomingEvent,
        result: Result<Applied, HandlerError>,
    ) {
        let event_type = event.meta.event_type.as_str();
        let (delivered, stream_sequence) = (event.delivered, event.stream_sequence);
        match result {
            Ok(applied) => {
                ack(msg, AckKind::Ack).await;
                self.count(
                    event_type,
                    if applied == Applied::Applied {
                        Outcome::Applied
                    } else {
                        Outcome::Duplicate
                    },
                );
            }
            Err(HandlerError::Permanent(reason)) => {
                tracing::error!(event_id = %event.meta.id, error = %reason, "permanent handler failure");
                self.dead_letter(
                    msg,
                    Some(event_type),
                    delivered,
                    stream_sequence,
                    Reason::Permanent,
                    &reason,
                )
                .await;
            }
            Err(HandlerError::Undecodable(reason)) => {
                tracing::error!(event_id = %event.meta.id, error = %reason, "undecodable payload");
                self.dead_letter(
                    msg,
                    Some(event_type),
                    delivered,
                    stream_sequence,
                    Reason::Undecodable,
                    &reason,
                )
                .await;
            }
            Err(HandlerError::Transient(e)) if delivered >= self.config.max_deliver => {
                tracing::error!(event_id = %event.meta.id, delivered, error = %e, "delivery limit reached");
                self.dead_letter(
                    msg,
                    Some(event_type),
                    delivered,
                    stream_sequence,
                    Reason::MaxDeliver,
                    &e.to_string(),
                )
                .await;
            }
            Err(HandlerError::Transient(e)) => {
                let delay = self.config.retry_delay(delivered);
                tracing::warn!(event_id = %event.meta.id, delivered, retry_in_ms = delay.as_millis() as u64, error = %e, "handler failed, will retry");
                self.count(event_type, Outcome::Retried);
                ack(msg, AckKind::Nak(Some(delay))).await;
            }
        }
    }

    async fn dead_letter(
        &self,
        msg: &jetstream::Message,
        event_type: Option<&str>,
        delivered: i64,
        stream_sequence: u64,
        reason: Reason,
        error: &str,
    ) {
        let origin = deadletter::Origin {
            consumer: &self.config.consumer.durable,
            stream: &self.config.consumer.stream,
            stream_sequence,
            subject: &msg.subject,
            delivered,
        };
        match deadletter::publish(
            &self.js,
            &origin,
            msg.headers.as_ref(),
            msg.payload.clone(),
            reason,
            error,
        )
        .await
        {
            Ok(()) => {
                self.metrics
                    .dead_lettered
                    .get_or_create(&ConsumerLabels {
                        consumer: origin.consumer.into(),
                    })
                    .inc();
                self.count(event_type.unwrap_or("unknown"), Outcome::DeadLettered);
                ack(msg, AckKind::Term).await;
            }
            Err(e) => {
                // Never drop it: try again later.
                let delay = self.config.retry_delay(delivered);
                tracing::error!(subject = %msg.subject, stream_sequence, error = %e, "dead-letter publish failed, will retry");
                ack(msg, AckKind::Nak(Some(delay))).await;
            }
        }
    }
}

async fn ack(msg: &jetstream::Message, kind: AckKind) {
    // A lost ack only causes a redelivery, which the processed-event record absorbs.
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(subject = %msg.subject, error = %e, "ack failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_aggregate_one_lane() {
        let a = lane_of("order.placed.o-1", 16);
        assert_eq!(a, lane_of("order.cancelled.o-1", 16));
        assert!(lane_of("garbage", 16) < 16);
    }

    #[test]
    fn retry_delay_grows_and_is_capped() {
        let c = RunnerConfig::new(ConsumerSpec::new(&crate::catalog::ORDER, "t", &["order.>"]));
        for d in 1..40 {
            let delay = c.retry_delay(d);
            assert!(delay <= c.retry_max, "{delay:?}");
            assert!(delay >= c.retry_initial / 2);
        }
        assert!(c.retry_delay(10) > c.retry_delay(1) || c.retry_delay(10) >= c.retry_max / 2);
    }
}
