//! Exactly-once effects for state kept in the service's Postgres database: the handler runs in
//! the transaction that also records `(consumer, event id)` as processed, so a redelivered event
//! finds its record and has no second effect. Batches apply in one transaction, with a
//! one-at-a-time fallback when anything in them fails.

use std::collections::HashSet;
use std::future::Future;

use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use crate::consumer::{Applied, HandlerError, Processor, event_span, one_at_a_time};
use crate::envelope::IncomingEvent;

/// A handler whose effect lives in the service's Postgres database. It runs inside the
/// transaction that also records the event as processed; events it emits go through
/// [`crate::outbox::enqueue`] on the same connection.
pub trait PgHandler: Send + Sync + 'static {
    fn handles(&self, event_type: &str) -> bool;
    fn handle(
        &self,
        tx: &mut PgConnection,
        event: &IncomingEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Runs first in a batch's transaction, before any of its events is handled. A handler
    /// that locks rows other events also touch takes here, in one global order, every lock the
    /// batch will need, so two batches cannot deadlock. The default takes none.
    fn lock_batch(
        &self,
        tx: &mut PgConnection,
        events: &[&IncomingEvent],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = (tx, events);
        async { Ok(()) }
    }
}

/// Runs a [`PgHandler`] with the processed-event record in the same transaction.
#[derive(Debug)]
pub struct PgProcessor<H> {
    pool: PgPool,
    handler: H,
}

impl<H: PgHandler> PgProcessor<H> {
    pub fn new(pool: PgPool, handler: H) -> Self {
        Self { pool, handler }
    }
}

impl<H: PgHandler> Processor for PgProcessor<H> {
    fn handles(&self, event_type: &str) -> bool {
        self.handler.handles(event_type)
    }

    async fn process(
        &self,
        consumer: &str,
        event: &IncomingEvent,
    ) -> Result<Applied, HandlerError> {
        let mut tx = self.pool.begin().await?;
        // A concurrent copy of this event blocks here until the first commits, then sees it.
        let fresh = sqlx::query(
            "INSERT INTO jetmart_processed (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(event.meta.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok(Applied::Duplicate);
        }
        self.handler.handle(&mut tx, event).await?;
        tx.commit().await?;
        Ok(Applied::Applied)
    }

    async fn process_batch(
        &self,
        consumer: &str,
        events: &[IncomingEvent],
    ) -> Vec<Result<Applied, HandlerError>> {
        match self.apply_together(consumer, events).await {
            Ok(applied) => applied.into_iter().map(Ok).collect(),
            Err(e) => {
                // Rolled back as a whole: redo one by one so only the failing event fails.
                tracing::debug!(consumer, events = events.len(), error = %e, "batch rolled back, applying one at a time");
                one_at_a_time(self, consumer, events).await
            }
        }
    }
}

impl<H: PgHandler> PgProcessor<H> {
    /// Every event of the batch in one transaction, with one statement recording them all.
    async fn apply_together(
        &self,
        consumer: &str,
        events: &[IncomingEvent],
    ) -> Result<Vec<Applied>, HandlerError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = events.iter().map(|e| e.meta.id).collect();
        let fresh: HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO jetmart_processed (consumer, event_id)
             SELECT $1, id FROM unnest($2::uuid[]) AS id
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .bind(consumer)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut seen = HashSet::with_capacity(events.len());
        // The same event twice in one batch (a redelivery racing the original) applies once.
        let apply: Vec<bool> = events
            .iter()
            .map(|e| fresh.contains(&e.meta.id) && seen.insert(e.meta.id))
            .collect();
        let applied: Vec<&IncomingEvent> = events
            .iter()
            .zip(&apply)
            .filter_map(|(e, a)| a.then_some(e))
            .collect();
        self.handler.lock_batch(&mut tx, &applied).await?;
        for event in &applied {
            self.handler
                .handle(&mut tx, event)
                .instrument(event_span(consumer, event))
                .await?;
        }
        let out = apply
            .into_iter()
            .map(|a| {
                if a {
                    Applied::Applied
                } else {
                    Applied::Duplicate
                }
            })
            .collect();
        tx.commit().await?;
        Ok(out)
    }
}
