//! The live consumers' processor: reads the generation pointer for every event, then applies
//! the event to that generation with the runtime's exactly-once [`RedisProcessor`]. Reading the
//! pointer per event (one GET) is what lets a rebuild swap generations under running consumers
//! without losing an event; see [`crate::rebuild`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jetmart_runtime::IncomingEvent;
use jetmart_runtime::consumer::{Applied, HandlerError, Processor};
use jetmart_runtime::redis_once::{RedisOnce, RedisProcessor};
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use crate::generation::{self, Target};
use crate::handlers::AnalyticsHandler;
use crate::keys::Keyspace;
use crate::rebuild::{self, RebuildError, RebuildOptions};

type Cached = (Keyspace, Arc<RedisProcessor<AnalyticsHandler>>);

/// One processor per generation, made on first use.
#[derive(Clone)]
pub struct Generations {
    conn: ConnectionManager,
    marker_ttl: Duration,
    cached: Arc<Mutex<Option<Cached>>>,
}

impl std::fmt::Debug for Generations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generations")
            .field("marker_ttl", &self.marker_ttl)
            .finish_non_exhaustive()
    }
}

impl Generations {
    pub fn new(conn: ConnectionManager, marker_ttl: Duration) -> Self {
        Self {
            conn,
            marker_ttl,
            cached: Arc::default(),
        }
    }

    /// The exactly-once processor writing into `keys`.
    pub fn processor(&self, keys: Keyspace) -> Arc<RedisProcessor<AnalyticsHandler>> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        match &*cached {
            Some((k, p)) if *k == keys => p.clone(),
            _ => {
                let p = Arc::new(RedisProcessor::new(
                    RedisOnce::new(self.conn.clone(), self.marker_ttl),
                    AnalyticsHandler::new(keys),
                ));
                *cached = Some((keys, p.clone()));
                p
            }
        }
    }
}

/// Rebuilds the read model by replay when it is missing: on a first start, and after Redis lost
/// its data (FLUSHALL, a restart without persistence), also when the rebuild that was running
/// then died or lost its lease. One rebuild at a time per replica; the lease keeps replicas from
/// running two.
#[derive(Clone)]
pub struct Recovery {
    js: async_nats::jetstream::Context,
    redis: ConnectionManager,
    options: RebuildOptions,
    running: Arc<AtomicBool>,
}

/// How often the watchdog looks for a missing read model that no rebuild is filling.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);
/// Pause after a failed rebuild before this replica tries again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("running", &self.running.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Recovery {
    pub fn new(
        js: async_nats::jetstream::Context,
        redis: ConnectionManager,
        options: RebuildOptions,
    ) -> Self {
        Self {
            js,
            redis,
            options,
            running: Arc::default(),
        }
    }

    /// Starts a rebuild in the background unless this replica already runs one.
    fn start(&self) {
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut failed = false;
            // Someone else may have rebuilt it since we looked.
            if let Ok(Target::Nothing) = generation::target(&this.redis).await {
                tracing::warn!(
                    "analytics read model missing; rebuilding it by replaying the streams"
                );
                match rebuild::rebuild(&this.js, &this.redis, &this.options, |_| {}).await {
                    Ok(report) => {
                        tracing::info!(generation = report.generation, "read model rebuilt")
                    }
                    Err(RebuildError::Busy) => {
                        tracing::info!("another replica is rebuilding the read model")
                    }
                    Err(e) => {
                        failed = true;
                        tracing::error!(error = %e, "read model rebuild failed; will try again")
                    }
                }
            }
            if failed {
                tokio::time::sleep(RETRY_AFTER).await;
            }
            this.running.store(false, Ordering::Release);
        });
    }

    /// Until `shutdown`: starts a rebuild whenever there is neither a read model nor a rebuild
    /// filling one, so the read model comes back without waiting for the next event (the
    /// rebuild that was running may have died with its replica, or lost its lease to a flush).
    pub async fn watch(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(WATCH_EVERY) => {}
            }
            if let Ok(Target::Nothing) = generation::target(&self.redis).await {
                self.start();
            }
        }
    }
}

/// The [`Processor`] of the durable `analytics` consumers.
#[derive(Debug, Clone)]
pub struct LiveProcessor {
    generations: Generations,
    recovery: Recovery,
}

impl LiveProcessor {
    pub fn new(generations: Generations, recovery: Recovery) -> Self {
        Self {
            generations,
            recovery,
        }
    }
}

impl Processor for LiveProcessor {
    fn handles(&self, event_type: &str) -> bool {
        AnalyticsHandler::understands(event_type)
    }

    async fn process(
        &self,
        consumer: &str,
        event: &IncomingEvent,
    ) -> Result<Applied, HandlerError> {
        // After the delivery, never before: see the swap argument in `rebuild`.
        let keys = match generation::target(&self.generations.conn).await? {
            Target::Current(keys) | Target::Building(keys) => keys,
            Target::Nothing => {
                // No read model (first start, or Redis lost it) and no rebuild filling one:
                // counting into an empty one would miss the history. Replay builds it; this
                // event waits and is retried meanwhile.
                self.recovery.start();
                return Err(HandlerError::transient(
                    "analytics read model missing; rebuilding by replay",
                ));
            }
        };
        self.generations
            .processor(keys)
            .process(consumer, event)
            .await
    }
}

/// At start: when there is no read model and no stream holds an event yet, there is nothing to
/// replay, so counting starts in an empty generation right away. (With history and no read
/// model, a rebuild builds it instead; see [`Recovery`].)
pub async fn start_empty_without_history(
    js: &async_nats::jetstream::Context,
    redis: &ConnectionManager,
) {
    if !matches!(generation::peek(redis).await, Ok(None)) {
        return;
    }
    for spec in jetmart_runtime::catalog::BUSINESS_STREAMS {
        if let Ok(mut stream) = js.get_stream(spec.name).await
            && stream.info().await.map_or(true, |i| i.state.messages > 0)
        {
            return;
        }
    }
    if let Err(e) = generation::create_empty(redis).await {
        tracing::warn!(error = %e, "cannot create the empty read model yet");
    }
}
