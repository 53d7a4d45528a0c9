//! Prometheus metrics of the runtime. Services register them in their registry once.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    /// Effect committed.
    Applied,
    /// Already handled before: acknowledged without effect.
    Duplicate,
    /// Unknown event type on a subscribed subject: acknowledged and counted.
    Ignored,
    /// Transient failure: negatively acknowledged with a delay.
    Retried,
    /// Copied to the dead-letter stream and terminated.
    DeadLettered,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    pub consumer: String,
    pub event_type: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PendingLabels {
    pub consumer: String,
    pub stream: String,
}

type HistogramFamily = Family<ConsumerLabels, Histogram, fn() -> Histogram>;

fn handler_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn batch_histogram() -> Histogram {
    // 1 .. 512 events
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

/// Every runtime metric. Cheap to clone through the `Arc`.
#[derive(Debug)]
pub struct RuntimeMetrics {
    pub handled: Family<HandledLabels, Counter>,
    pub dead_lettered: Family<ConsumerLabels, Counter>,
    pub redelivered: Family<ConsumerLabels, Counter>,
    pub handler_duration: HistogramFamily,
    pub batch_size: HistogramFamily,
    pub consumer_pending: Family<PendingLabels, Gauge>,
    pub outbox_backlog: Gauge,
    pub outbox_published: Counter,
    pub outbox_deduplicated: Counter,
    pub outbox_round_failures: Counter,
}

impl RuntimeMetrics {
    /// Metrics that are counted but exported nowhere (tests, tools).
    pub fn unregistered() -> Arc<Self> {
        Arc::new(Self {
            handled: Family::default(),
            dead_lettered: Family::default(),
            redelivered: Family::default(),
            handler_duration: Family::new_with_constructor(handler_histogram),
            batch_size: Family::new_with_constructor(batch_histogram),
            consumer_pending: Family::default(),
            outbox_backlog: Gauge::default(),
            outbox_published: Counter::default(),
            outbox_deduplicated: Counter::default(),
            outbox_round_failures: Counter::default(),
        })
    }

    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Self::unregistered();
        let r = registry.sub_registry_with_prefix("jetmart");
        r.register(
            "events_handled",
            "Events taken off a consumer, by outcome",
            m.handled.clone(),
        );
        r.register(
            "events_dead_lettered",
            "Events copied to the dead-letter stream",
            m.dead_lettered.clone(),
        );
        r.register(
            "events_redelivered",
            "Deliveries after the first",
            m.redelivered.clone(),
        );
        r.register(
            "handler_duration_seconds",
            "Handler time including its transaction (one observation per batch)",
            m.handler_duration.clone(),
        );
        r.register(
            "consumer_batch_size",
            "Events applied together in one handler transaction",
            m.batch_size.clone(),
        );
        r.register(
            "consumer_pending",
            "Messages not yet delivered to the durable consumer",
            m.consumer_pending.clone(),
        );
        r.register(
            "outbox_backlog",
            "Outbox rows not yet published",
            m.outbox_backlog.clone(),
        );
        r.register(
            "outbox_published",
            "Outbox rows published and acknowledged by JetStream",
            m.outbox_published.clone(),
        );
        r.register(
            "outbox_deduplicated",
            "Publishes JetStream reported as duplicates (re-sent after a crash)",
            m.outbox_deduplicated.clone(),
        );
        r.register(
            "outbox_round_failures",
            "Relay rounds that failed (NATS or Postgres away)",
            m.outbox_round_failures.clone(),
        );
        m
    }
}
