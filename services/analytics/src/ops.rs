//! What JetStream tells about the flow: per stream and consumer, how much is waiting, how much
//! is being redelivered, and what sits in the dead-letter stream. Read on demand (with a short
//! timeout each), never stored: it describes the brokers, not the business.
//!
//! Outbox backlogs live in each publishing service's own database, which analytics cannot and
//! should not reach; the page says where to find them (`jetmart_outbox_backlog` on each
//! service's /metrics) instead of guessing.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use jetmart_runtime::catalog;
use serde::Serialize;

use crate::NAME;

const TIMEOUT: Duration = Duration::from_secs(2);
/// Dead-letter subjects looked at to split the count per consumer.
const MAX_DEAD_LETTER_SUBJECTS: usize = 10_000;

/// Where to find what analytics cannot see.
pub const OUTBOX_NOTE: &str = "Outbox backlog lives in each service's own database: see \
    jetmart_outbox_backlog on the /metrics endpoint of each service.";

/// How far the analytics consumer has read one stream (Dashboard.streams).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamProgress {
    pub stream: String,
    /// Every message up to here is applied (the consumer's ack floor).
    pub last_sequence: u64,
    /// `ce-time` of that message, when it can be read.
    pub last_event_at: Option<DateTime<Utc>>,
    /// Not delivered yet plus delivered and not yet acknowledged.
    pub pending: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamRow {
    pub stream: String,
    pub messages: u64,
    pub last_sequence: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerRow {
    pub stream: String,
    pub consumer: String,
    /// Messages not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub ack_pending: u64,
    /// Messages currently being redelivered (JetStream's num_redelivered; the running totals are
    /// `jetmart_events_redelivered` on each service's /metrics).
    pub redelivered: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterCount {
    pub consumer: String,
    pub count: u64,
}

/// The operational panels of the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ops {
    pub streams: Vec<StreamRow>,
    pub consumers: Vec<ConsumerRow>,
    /// Messages in the DEADLETTER stream (None when it cannot be read).
    pub dead_letters: Option<u64>,
    pub dead_letters_by_consumer: Vec<DeadLetterCount>,
    pub outbox: &'static str,
    /// What could not be read (permissions, NATS away), in words.
    pub problems: Vec<String>,
}

async fn timed<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: timed out")),
    }
}

/// The analytics consumer's progress on every business stream (skipping what cannot be read).
/// Streams are asked concurrently, each call with a short timeout, so a slow or absent NATS
/// delays a dashboard by seconds at most.
pub async fn progress(js: &jetstream::Context) -> Vec<StreamProgress> {
    let found = futures::future::join_all(
        catalog::BUSINESS_STREAMS
            .iter()
            .map(|spec| stream_progress(js, spec.name)),
    )
    .await;
    found
        .into_iter()
        .zip(catalog::BUSINESS_STREAMS)
        .filter_map(|(found, spec)| match found {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::debug!(stream = spec.name, error = %e, "no progress");
                None
            }
        })
        .collect()
}

async fn stream_progress(js: &jetstream::Context, name: &str) -> Result<StreamProgress, String> {
    let stream = timed("stream", js.get_stream(name)).await?;
    let info = timed("consumer", stream.consumer_info(NAME)).await?;
    let seq = info.ack_floor.stream_sequence;
    let last_event_at = if seq == 0 {
        None
    } else {
        timed("message", stream.direct_get(seq))
            .await
            .ok()
            .and_then(|m| {
                let t = m.headers.get(jetmart_runtime::envelope::header::TIME)?;
                DateTime::parse_from_rfc3339(t.as_str()).ok()
            })
            .map(|t| t.with_timezone(&Utc))
    };
    Ok(StreamProgress {
        stream: name.to_owned(),
        last_sequence: seq,
        last_event_at,
        pending: info.num_pending + info.num_ack_pending as u64,
    })
}

/// One stream's size and durable consumers.
async fn stream_ops(
    js: &jetstream::Context,
    name: &str,
) -> Result<(StreamRow, Result<Vec<ConsumerRow>, String>), String> {
    let stream = timed(name, js.get_stream(name)).await?;
    let state = stream.cached_info().state.clone();
    let row = StreamRow {
        stream: name.to_owned(),
        messages: state.messages,
        last_sequence: state.last_sequence,
    };
    let consumers = timed(
        &format!("consumers of {name}"),
        stream.consumers().try_collect::<Vec<_>>(),
    )
    .await
    .map(|infos| {
        let mut rows: Vec<ConsumerRow> = infos
            .into_iter()
            // Ephemeral consumers (a rebuild's replay, tools) come and go.
            .filter(|i| i.config.durable_name.is_some())
            .map(|i| ConsumerRow {
                stream: name.to_owned(),
                consumer: i.name,
                pending: i.num_pending,
                ack_pending: i.num_ack_pending as u64,
                redelivered: i.num_redelivered as u64,
            })
            .collect();
        rows.sort_by(|a, b| a.consumer.cmp(&b.consumer));
        rows
    });
    Ok((row, consumers))
}

/// Every stream's size, every durable consumer's backlog, and the dead letters.
pub async fn collect(js: &jetstream::Context) -> Ops {
    let mut ops = Ops {
        streams: Vec::new(),
        consumers: Vec::new(),
        dead_letters: None,
        dead_letters_by_consumer: Vec::new(),
        outbox: OUTBOX_NOTE,
        problems: Vec::new(),
    };
    let (per_stream, dead) = tokio::join!(
        futures::future::join_all(
            catalog::BUSINESS_STREAMS
                .iter()
                .map(|spec| stream_ops(js, spec.name)),
        ),
        dead_letters(js)
    );
    for found in per_stream {
        match found {
            Ok((row, consumers)) => {
                ops.streams.push(row);
                match consumers {
                    Ok(rows) => ops.consumers.extend(rows),
                    Err(e) => ops.problems.push(e),
                }
            }
            Err(e) => ops.problems.push(e),
        }
    }
    match dead {
        Ok((total, by_consumer)) => {
            ops.dead_letters = Some(total);
            ops.dead_letters_by_consumer = by_consumer;
        }
        Err(e) => ops.problems.push(e),
    }
    ops
}

async fn dead_letters(js: &jetstream::Context) -> Result<(u64, Vec<DeadLetterCount>), String> {
    let name = catalog::DEADLETTER.name;
    let stream = timed(name, js.get_stream(name)).await?;
    let total = stream.cached_info().state.messages;
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    if total > 0 {
        let mut subjects = timed(
            "dead-letter subjects",
            stream.info_with_subjects("deadletter.>"),
        )
        .await?;
        let mut seen = 0;
        // deadletter.<consumer>.<original subject>
        while let Some((subject, count)) =
            timed("dead-letter subjects", subjects.try_next()).await?
        {
            let consumer = subject.split('.').nth(1).unwrap_or("?").to_owned();
            *by.entry(consumer).or_default() += count as u64;
            seen += 1;
            if seen >= MAX_DEAD_LETTER_SUBJECTS {
                break;
            }
        }
    }
    Ok((
        total,
        by.into_iter()
            .map(|(consumer, count)| DeadLetterCount { consumer, count })
            .collect(),
    ))
}
