//! Rebuild without downtime: replay every stream into a fresh generation beside the live one,
//! swap the pointer, delete the older generations.
//!
//! # Why this design
//!
//! The live `analytics` consumers read the generation pointer (`analytics:v1:current`) *after*
//! a message is delivered and before applying it ([`crate::live`]), and every effect carries the
//! marker of its own generation. The rebuild:
//!
//! 0. allocates a generation number never used before (N+1) and takes the lease
//!    `analytics:v1:rebuild-lock` = `<N+1> <token>` (renewed while it runs, so a rebuild whose
//!    process died frees it within `lock_ttl`);
//! 1. replays each stream from its start up to its last sequence (measured after taking the
//!    lease) into N+1 with ordered ephemeral consumers, concurrently (every effect commutes, so
//!    application order does not matter);
//! 2. catches up the same way from where it stopped to the then-last sequence (so little is
//!    left for step 4), while the dashboard still shows N;
//! 3. swaps the pointer N -> N+1 (compare-and-set, and only while it still holds its lease);
//! 4. catches up once more, from where it stopped to the last sequence measured *after* the
//!    swap;
//! 5. deletes the generations older than N+1.
//!
//! No event is lost: an event the live consumer applies to N (not N+1) was delivered before it
//! read the pointer, and it read the pointer before the swap; so the event was already stored
//! in its stream before the swap, and step 4, which reads up to the last sequence measured after
//! the swap, replays it into N+1. No event counts twice: every write into N+1, by the replay or
//! by a live consumer that already sees N+1, goes through the marker of N+1.
//!
//! # When Redis loses its data
//!
//! After a flush there is no pointer, and nothing may create one that lacks history (see
//! [`crate::generation`]): the first live consumer or the service's watchdog that finds neither
//! a pointer nor a lease starts a rebuild with no previous generation. While it runs, live
//! consumers write into the generation its lease names (an event they apply there and that
//! outlives this rebuild was delivered before the lease was read, so it is stored before any
//! later rebuild measures its targets and is replayed by it). A flush during the rebuild deletes
//! its lease, so it can no longer swap (its keyspace lost what it had replayed); a rebuild whose
//! process dies leaves no pointer behind and its lease expires. Either way the next rebuild
//! starts from scratch, and the read model appears only once complete.
//!
//! We chose this over dual-writing during the rebuild (which needs two markers per event in one
//! script, more than the runtime's check-and-apply offers) and over pausing the durable
//! consumers at a known position (which stops live counting for the cut-over and needs consumer
//! pause rights): here the live consumers never stop, and the only cost is one read per event.
//!
//! Visible effects: between steps 3 and 4 (a moment, as step 2 left little to do) the dashboard
//! may lack the events that arrived during step 2; it never shows anything twice. After a flush
//! the dashboard is empty (generation 0) until the rebuild swaps in. A live consumer that read
//! the pointer just before the swap may write a few keys into N after step 5 deleted it; those
//! are unreachable and are swept by the next rebuild.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jetmart_runtime::consumer::{Applied, HandlerError, Processor};
use jetmart_runtime::redis_once::{RedisOnce, RedisProcessor};
use jetmart_runtime::{EventMeta, IncomingEvent, catalog};
use redis::aio::ConnectionManager;

use crate::NAME;
use crate::generation::{self, Swap};
use crate::handlers::AnalyticsHandler;
use crate::keys::{self, Keyspace};

/// Events applied at once during a replay.
const CONCURRENCY: usize = 64;
/// Without a message for this long, the replay checks whether its end still exists.
const IDLE: Duration = Duration::from_secs(5);
/// Idle checks before giving up on a stream that does not deliver what it says it holds.
const MAX_IDLE: u32 = 12;
/// Attempts of one event on transient (Redis) failures.
const MAX_ATTEMPTS: u32 = 10;
/// Pre-swap catch-up rounds (each shortens what is left for after the swap).
const CATCH_UP_ROUNDS: usize = 3;
/// Progress is reported every this many events per stream.
const REPORT_EVERY: u64 = 500;

#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// Lifetime of the exactly-once markers (as the service's ANALYTICS_MARKER_TTL_SECS).
    pub marker_ttl: Duration,
    /// The lease expires after this long if the rebuild dies without releasing it; a running
    /// rebuild renews it every third of this.
    pub lock_ttl: Duration,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        Self {
            marker_ttl: Duration::from_secs(8 * 24 * 3600),
            lock_ttl: Duration::from_secs(15),
        }
    }
}

/// Which pass of the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// From the start of each stream.
    Replay,
    /// Before the swap, up to what arrived meanwhile.
    CatchUp,
    /// After the swap, up to what arrived before it.
    AfterSwap,
}

/// Reported as the rebuild goes (for progress bars).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The generations, and per stream the last sequence the first pass replays up to.
    Started {
        previous: u64,
        generation: u64,
        targets: Vec<(String, u64)>,
    },
    /// `sequence` of `last` reached in `stream`.
    Replaying {
        stream: String,
        phase: Phase,
        sequence: u64,
        last: u64,
    },
    Swapped {
        previous: u64,
        generation: u64,
    },
    Deleted {
        keys: u64,
    },
}

/// What a replay did with the messages it read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub applied: u64,
    /// Already in the new generation (a live consumer got there first, or a duplicate event).
    pub duplicates: u64,
    /// Unreadable envelopes, unknown event types and permanently bad events (the live consumer
    /// dead-letters those; the rebuild leaves them out).
    pub skipped: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Self) {
        self.applied += o.applied;
        self.duplicates += o.duplicates;
        self.skipped += o.skipped;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    pub previous: u64,
    pub generation: u64,
    /// The first pass.
    pub replayed: Counts,
    /// Both catch-up passes.
    pub caught_up: Counts,
    /// Last sequence applied per stream.
    pub streams: Vec<(String, u64)>,
    /// Keys of old generations deleted.
    pub deleted_keys: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("another rebuild is running ({} is held)", keys::REBUILD_LOCK)]
    Busy,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("the read model was swapped by someone else during the rebuild")]
    Raced,
    #[error(
        "the rebuild lost its lease (Redis lost its data, or the lease expired); nothing was swapped in"
    )]
    LeaseLost,
    #[error("event at {stream} #{sequence} keeps failing: {message}")]
    Apply {
        stream: String,
        sequence: u64,
        message: String,
    },
}

fn stream_error(stream: &str, e: impl std::fmt::Display) -> RebuildError {
    RebuildError::Stream {
        stream: stream.to_owned(),
        message: e.to_string(),
    }
}

/// Replays every business stream into a new generation and swaps it in; see the module docs.
/// Safe to run while the service runs (any number of replicas); two rebuilds exclude each other.
pub async fn rebuild(
    js: &jetstream::Context,
    redis: &ConnectionManager,
    options: &RebuildOptions,
    mut progress: impl FnMut(&Progress) + Send,
) -> Result<RebuildReport, RebuildError> {
    let next = generation::allocate(redis).await?;
    let lease = Lease::acquire(redis, next, options.lock_ttl).await?;
    let result = tokio::select! {
        r = run(js, redis, options, &lease, next, &mut progress) => r,
        lost = lease.keep(redis, options.lock_ttl) => Err(lost),
    };
    if result.is_err() {
        // Leave nothing half-built behind (unless it is the read model after all).
        if generation::peek(redis).await.ok().flatten() != Some(next)
            && let Err(del) = delete_generation(redis, next).await
        {
            tracing::warn!(error = %del, "half-built generation not deleted");
        }
    }
    if let Err(e) = lease.release(redis).await {
        tracing::warn!(error = %e, "rebuild lease not released; it expires on its own");
    }
    result
}

async fn run(
    js: &jetstream::Context,
    redis: &ConnectionManager,
    options: &RebuildOptions,
    lease: &Lease,
    next: Keyspace,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<RebuildReport, RebuildError> {
    // Never create a pointer here: an empty current generation would take live counts and
    // hide the missing history if this rebuild did not finish.
    let previous = generation::peek(redis).await?;
    let processor = RedisProcessor::new(
        RedisOnce::new(redis.clone(), options.marker_ttl),
        AnalyticsHandler::new(next),
    );
    let mut report = fill_and_swap(
        js,
        redis,
        &processor,
        previous,
        next,
        &lease.value,
        progress,
    )
    .await?;
    report.deleted_keys = sweep(redis, next).await?;
    progress(&Progress::Deleted {
        keys: report.deleted_keys,
    });
    tracing::info!(
        previous = report.previous,
        generation = next.generation(),
        applied = report.replayed.applied + report.caught_up.applied,
        deleted_keys = report.deleted_keys,
        "analytics read model rebuilt"
    );
    Ok(report)
}

async fn fill_and_swap(
    js: &jetstream::Context,
    redis: &ConnectionManager,
    processor: &RedisProcessor<AnalyticsHandler>,
    previous: Option<Keyspace>,
    next: Keyspace,
    lease: &str,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<RebuildReport, RebuildError> {
    let previous_number = previous.map_or(0, |k| k.generation());
    // Last sequence applied so far per stream.
    let mut reached: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut targets = Vec::new();
    for spec in catalog::BUSINESS_STREAMS {
        let last = last_sequence(js, spec.name).await?;
        targets.push((spec.name.to_owned(), last));
        reached.insert(spec.name, 0);
    }
    progress(&Progress::Started {
        previous: previous_number,
        generation: next.generation(),
        targets: targets.clone(),
    });
    let mut report = RebuildReport {
        previous: previous_number,
        generation: next.generation(),
        replayed: Counts::default(),
        caught_up: Counts::default(),
        streams: Vec::new(),
        deleted_keys: 0,
    };
    for (stream, last) in &targets {
        report.replayed += replay(js, stream, 1, *last, processor, Phase::Replay, progress).await?;
        if let Some(r) = reached.get_mut(stream.as_str()) {
            *r = *last;
        }
    }
    for _ in 0..CATCH_UP_ROUNDS {
        let counts = catch_up(js, processor, &mut reached, Phase::CatchUp, progress).await?;
        report.caught_up += counts;
        if counts.applied + counts.duplicates + counts.skipped < CONCURRENCY as u64 {
            break;
        }
    }
    match generation::swap(redis, previous, next, lease).await? {
        Swap::Swapped => {}
        Swap::Moved => return Err(RebuildError::Raced),
        Swap::LeaseLost => return Err(RebuildError::LeaseLost),
    }
    progress(&Progress::Swapped {
        previous: previous_number,
        generation: next.generation(),
    });
    report.caught_up += catch_up(js, processor, &mut reached, Phase::AfterSwap, progress).await?;
    report.streams = reached.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect();
    Ok(report)
}

/// Replays each stream from after `reached` to its current last sequence.
async fn catch_up(
    js: &jetstream::Context,
    processor: &RedisProcessor<AnalyticsHandler>,
    reached: &mut BTreeMap<&'static str, u64>,
    phase: Phase,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Counts, RebuildError> {
    let mut counts = Counts::default();
    for (stream, from) in reached.iter_mut() {
        let last = last_sequence(js, stream).await?;
        if last > *from {
            counts += replay(js, stream, *from + 1, last, processor, phase, progress).await?;
            *from = last;
        }
    }
    Ok(counts)
}

/// The stream's last sequence; 0 for a stream that does not exist (nothing to replay).
async fn last_sequence(js: &jetstream::Context, stream: &str) -> Result<u64, RebuildError> {
    use async_nats::jetstream::context::GetStreamErrorKind;
    match js.get_stream(stream).await {
        Ok(s) => Ok(s.cached_info().state.last_sequence),
        Err(e)
            if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            Ok(0)
        }
        Err(e) => Err(stream_error(stream, e)),
    }
}

enum Outcome {
    Applied,
    Duplicate,
    Skipped,
}

/// Applies messages `from..=to` of `stream` (those still stored) to the new generation.
async fn replay(
    js: &jetstream::Context,
    stream: &str,
    from: u64,
    to: u64,
    processor: &RedisProcessor<AnalyticsHandler>,
    phase: Phase,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Counts, RebuildError> {
    let mut counts = Counts::default();
    if from > to {
        return Ok(counts);
    }
    let handle = js
        .get_stream(stream)
        .await
        .map_err(|e| stream_error(stream, e))?;
    let consumer = handle
        .create_consumer(OrderedConfig {
            name: Some(format!("{NAME}-rebuild-{}", uuid::Uuid::now_v7().simple())),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| stream_error(stream, e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| stream_error(stream, e))?;
    let mut inflight = FuturesUnordered::new();
    let mut reading = true;
    let mut idle = 0;
    let mut highest = from - 1;
    let mut done = 0u64;
    loop {
        tokio::select! {
            Some(outcome) = inflight.next(), if !inflight.is_empty() => {
                match outcome? {
                    Outcome::Applied => counts.applied += 1,
                    Outcome::Duplicate => counts.duplicates += 1,
                    Outcome::Skipped => counts.skipped += 1,
                }
                done += 1;
                if done.is_multiple_of(REPORT_EVERY) {
                    progress(&Progress::Replaying { stream: stream.to_owned(), phase, sequence: highest, last: to });
                }
            }
            next = tokio::time::timeout(IDLE, messages.next()), if reading && inflight.len() < CONCURRENCY => {
                match next {
                    Ok(Some(Ok(msg))) => {
                        idle = 0;
                        let Ok(sequence) = msg.info().map(|i| i.stream_sequence) else {
                            continue;
                        };
                        if sequence > to {
                            reading = false;
                            continue;
                        }
                        highest = highest.max(sequence);
                        inflight.push(apply(processor, stream, sequence, msg));
                        if sequence >= to {
                            reading = false;
                        }
                    }
                    // The ordered consumer recreates itself after gaps and hiccups.
                    Ok(Some(Err(e))) => tracing::debug!(stream, error = %e, "replay interrupted"),
                    Ok(None) => return Err(stream_error(stream, "replay ended early")),
                    Err(_) => {
                        // Nothing for a while: is the end still there (purge, max age)?
                        let state = js
                            .get_stream(stream)
                            .await
                            .map_err(|e| stream_error(stream, e))?
                            .cached_info()
                            .state
                            .clone();
                        if state.messages == 0 || state.first_sequence > to || state.last_sequence <= highest {
                            reading = false;
                        } else {
                            idle += 1;
                            if idle >= MAX_IDLE {
                                return Err(stream_error(stream, format!("no message after #{highest} though the stream ends at #{}", state.last_sequence)));
                            }
                        }
                    }
                }
            }
            else => break,
        }
    }
    progress(&Progress::Replaying {
        stream: stream.to_owned(),
        phase,
        sequence: to,
        last: to,
    });
    Ok(counts)
}

async fn apply(
    processor: &RedisProcessor<AnalyticsHandler>,
    stream: &str,
    sequence: u64,
    msg: jetstream::Message,
) -> Result<Outcome, RebuildError> {
    let meta = match EventMeta::from_headers(msg.headers.as_ref()) {
        Ok(meta) => meta,
        Err(e) => {
            tracing::debug!(stream, sequence, error = %e, "replay skips an undecodable envelope");
            return Ok(Outcome::Skipped);
        }
    };
    if !processor.handles(&meta.event_type) {
        return Ok(Outcome::Skipped);
    }
    let event = IncomingEvent {
        meta,
        subject: msg.subject.to_string(),
        payload: msg.payload.clone(),
        delivered: 1,
        stream_sequence: sequence,
        decoded: Default::default(),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match processor.process(NAME, &event).await {
            Ok(Applied::Applied) => return Ok(Outcome::Applied),
            Ok(Applied::Duplicate) => return Ok(Outcome::Duplicate),
            Err(HandlerError::Permanent(reason) | HandlerError::Undecodable(reason)) => {
                tracing::debug!(stream, sequence, event_id = %event.meta.id, %reason, "replay skips a bad event");
                return Ok(Outcome::Skipped);
            }
            Err(HandlerError::Transient(e)) if attempt >= MAX_ATTEMPTS => {
                return Err(RebuildError::Apply {
                    stream: stream.to_owned(),
                    sequence,
                    message: e.to_string(),
                });
            }
            Err(HandlerError::Transient(e)) => {
                tracing::warn!(stream, sequence, attempt, error = %e, "replay retries an event");
                tokio::time::sleep(Duration::from_millis(100) * 2u32.pow(attempt.min(6))).await;
            }
        }
    }
}

/// The rebuild lock as a lease: `<generation> <random token>` under SET NX PX, renewed while
/// the rebuild runs, released only by its holder.
struct Lease {
    value: String,
}

const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

impl Lease {
    async fn acquire(
        redis: &ConnectionManager,
        generation: Keyspace,
        ttl: Duration,
    ) -> Result<Self, RebuildError> {
        let value = generation::lease_value(generation, &uuid::Uuid::now_v7().simple().to_string());
        let mut conn = redis.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(keys::REBUILD_LOCK)
            .arg(&value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut conn)
            .await?;
        match set {
            Some(_) => Ok(Self { value }),
            None => Err(RebuildError::Busy),
        }
    }

    /// Renews the lease every third of `ttl`; returns only when it is lost (a flush deleted it,
    /// or it expired while Redis could not be reached and someone else took it).
    async fn keep(&self, redis: &ConnectionManager, ttl: Duration) -> RebuildError {
        loop {
            tokio::time::sleep(ttl / 3).await;
            let mut conn = redis.clone();
            let renewed: Result<i64, _> = redis::Script::new(RENEW)
                .key(keys::REBUILD_LOCK)
                .arg(&self.value)
                .arg(millis(ttl))
                .invoke_async(&mut conn)
                .await;
            match renewed {
                Ok(1) => {}
                Ok(_) => return RebuildError::LeaseLost,
                // The swap checks the lease itself; keep trying.
                Err(e) => tracing::warn!(error = %e, "rebuild lease not renewed"),
            }
        }
    }

    async fn release(&self, redis: &ConnectionManager) -> redis::RedisResult<()> {
        let mut conn = redis.clone();
        let _: i64 = redis::Script::new(RELEASE)
            .key(keys::REBUILD_LOCK)
            .arg(&self.value)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}

/// Deletes the keys of every generation older than `keep`; returns how many. Newer ones are
/// left alone: they belong to a rebuild that started after a flush (numbers only grow).
pub async fn sweep(redis: &ConnectionManager, keep: Keyspace) -> redis::RedisResult<u64> {
    delete_matching(redis, keys::ALL_GENERATIONS, |key| {
        keys::generation_of(key).is_some_and(|g| g < keep.generation())
    })
    .await
}

async fn delete_generation(redis: &ConnectionManager, gone: Keyspace) -> redis::RedisResult<u64> {
    let pattern = format!("{}*", gone.prefix());
    delete_matching(redis, &pattern, |_| true).await
}

async fn delete_matching(
    redis: &ConnectionManager,
    pattern: &str,
    wanted: impl Fn(&str) -> bool,
) -> redis::RedisResult<u64> {
    let mut conn = redis.clone();
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        let doomed: Vec<&String> = batch.iter().filter(|k| wanted(k)).collect();
        if !doomed.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&doomed)
                .query_async(&mut conn)
                .await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}
