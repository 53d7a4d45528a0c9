//! Fixtures for the runtime's tests: an effect table, a handler that writes to it, stream reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use jetmart_proto::order::v1::{OrderConfirmed, OrderPlaced};
use jetmart_runtime::catalog::{DEADLETTER, ORDER};
use jetmart_runtime::consumer::{HandlerError, PgHandler};
use jetmart_runtime::provision::{self, ConsumerSpec, StreamSettings};
use jetmart_runtime::{IncomingEvent, OutgoingEvent, outbox};
use sqlx::{PgConnection, PgPool};

pub use jetmart_testkit::wait_until;

/// Runtime tables plus the test's effect table, streams ORDER and DEADLETTER.
pub async fn prepare(pool: &PgPool, js: &jetstream::Context) {
    jetmart_runtime::migrate(pool, &sqlx::migrate::Migrator::DEFAULT)
        .await
        .expect("migrations");
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS effects (
            consumer TEXT NOT NULL, event_id UUID NOT NULL, aggregate_id TEXT NOT NULL,
            instance TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
            tx BIGINT NOT NULL DEFAULT txid_current())",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS started (event_id UUID NOT NULL, instance TEXT NOT NULL)",
    )
    .execute(pool)
    .await
    .unwrap();
    provision::ensure_streams(js, &[ORDER, DEADLETTER], &StreamSettings::default())
        .await
        .expect("streams");
}

pub fn placed(order_id: &str) -> OutgoingEvent {
    OutgoingEvent::new(
        "test",
        order_id,
        &OrderPlaced {
            order_id: order_id.into(),
            ..Default::default()
        },
    )
}

/// Enqueues `events` in one transaction.
pub async fn enqueue(pool: &PgPool, events: &[OutgoingEvent]) {
    let mut tx = pool.begin().await.unwrap();
    outbox::enqueue(&mut tx, events).await.unwrap();
    tx.commit().await.unwrap();
}

/// Publishes straight to JetStream (as another service's relay would).
pub async fn publish(js: &jetstream::Context, e: &OutgoingEvent) {
    js.send_publish(
        e.subject.clone(),
        jetstream::message::PublishMessage::build()
            .headers(e.nats_headers())
            .payload(e.payload.clone()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// Every message of a stream, in stream order.
pub async fn read_stream(js: &jetstream::Context, stream: &str) -> Vec<jetstream::Message> {
    let s = js.get_stream(stream).await.unwrap();
    let consumer = s
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut info = s.clone();
    let total = info.info().await.unwrap().state.messages as usize;
    let mut out = Vec::with_capacity(total);
    if total == 0 {
        return out;
    }
    let mut msgs = consumer.messages().await.unwrap();
    while out.len() < total {
        let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
            .await
            .expect("stream read")
            .unwrap()
            .unwrap();
        out.push(jetstream::Message {
            message: m.message,
            context: js.clone(),
        });
    }
    out
}

/// Messages a stream holds now.
pub async fn stream_len(js: &jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

pub fn header<'a>(m: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    m.headers.as_ref()?.get(name).map(|v| v.as_str())
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

pub fn consumer_spec(name: &str) -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(&ORDER, name, &["order.placed.*"]);
    spec.ack_wait = Duration::from_secs(2);
    spec
}

/// Records each OrderPlaced as a row in `effects` and emits OrderConfirmed through the outbox.
/// Aggregates named `perm-*` fail permanently; `slow-ms` delays each event (simulated work) and
/// notes it in `started` first, outside the transaction.
#[derive(Clone)]
pub struct EffectHandler {
    pub instance: String,
    pub pool: PgPool,
    pub work: Duration,
    pub handled: Arc<AtomicUsize>,
}

impl EffectHandler {
    pub fn new(instance: &str, pool: &PgPool) -> Self {
        Self {
            instance: instance.into(),
            pool: pool.clone(),
            work: Duration::ZERO,
            handled: Arc::default(),
        }
    }
}

impl PgHandler for EffectHandler {
    fn handles(&self, event_type: &str) -> bool {
        event_type == "jetmart.order.v1.OrderPlaced"
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &IncomingEvent,
    ) -> Result<(), HandlerError> {
        let placed: OrderPlaced = event.decode()?;
        if placed.order_id.starts_with("perm-") {
            return Err(HandlerError::permanent("order id is on the refusal list"));
        }
        if !self.work.is_zero() {
            sqlx::query("INSERT INTO started (event_id, instance) VALUES ($1, $2)")
                .bind(event.meta.id)
                .bind(&self.instance)
                .execute(&self.pool)
                .await?;
            tokio::time::sleep(self.work).await;
        }
        sqlx::query("INSERT INTO effects (consumer, event_id, aggregate_id, instance) VALUES ('test', $1, $2, $3)")
            .bind(event.meta.id)
            .bind(&placed.order_id)
            .bind(&self.instance)
            .execute(&mut *tx)
            .await?;
        let confirmed = OutgoingEvent::new(
            "test",
            &placed.order_id,
            &OrderConfirmed {
                order_id: placed.order_id.clone(),
                ..Default::default()
            },
        )
        .caused_by(&event.meta);
        outbox::enqueue(tx, &[confirmed]).await?;
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
