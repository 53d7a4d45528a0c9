//! `streams`: every stream and its durable consumers, then the same per service.

use std::collections::BTreeMap;

use anyhow::Context;
use async_nats::jetstream::{self, consumer};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use jetmart_runtime::catalog::{BUSINESS_STREAMS, DEADLETTER};

use crate::out;

/// One consumer's state.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerState {
    pub stream: String,
    pub name: String,
    pub durable: bool,
    pub pending: u64,
    pub ack_pending: u64,
    pub redelivered: u64,
    pub last_active: Option<DateTime<Utc>>,
}

/// One stream's state and its consumers.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamState {
    pub name: String,
    pub messages: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub consumers: Vec<ConsumerState>,
}

/// Everything, in catalog order (other streams after, by name).
pub async fn collect(js: &jetstream::Context) -> anyhow::Result<Vec<StreamState>> {
    let mut names: Vec<String> = js
        .stream_names()
        .try_collect()
        .await
        .context("listing streams")?;
    let rank = |n: &str| {
        BUSINESS_STREAMS
            .iter()
            .chain(std::iter::once(&DEADLETTER))
            .position(|s| s.name == n)
            .unwrap_or(usize::MAX)
    };
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    let mut streams = Vec::with_capacity(names.len());
    for name in names {
        let mut stream = js
            .get_stream(&name)
            .await
            .with_context(|| format!("reading stream {name}"))?;
        let info = stream
            .info()
            .await
            .with_context(|| format!("reading stream {name}"))?
            .clone();
        let mut consumers = Vec::new();
        let mut list = stream.consumers();
        while let Some(c) = list.next().await {
            let c: consumer::Info = c.with_context(|| format!("listing consumers of {name}"))?;
            consumers.push(ConsumerState {
                stream: name.clone(),
                durable: c.config.durable_name.is_some(),
                name: c.name,
                pending: c.num_pending,
                ack_pending: c.num_ack_pending as u64,
                redelivered: c.num_redelivered as u64,
                last_active: c.delivered.last_active.map(out::nats_time),
            });
        }
        consumers.sort_by(|a, b| a.name.cmp(&b.name));
        streams.push(StreamState {
            name,
            messages: info.state.messages,
            bytes: info.state.bytes,
            first_seq: info.state.first_sequence,
            last_seq: info.state.last_sequence,
            consumers,
        });
    }
    Ok(streams)
}

/// Dead letters per consumer (service), from DEADLETTER's subjects.
async fn dead_letters_per_service(js: &jetstream::Context) -> BTreeMap<String, u64> {
    let mut per = BTreeMap::new();
    let Ok(stream) = js.get_stream(DEADLETTER.name).await else {
        return per;
    };
    let Ok(mut subjects) = stream.info_with_subjects("deadletter.>").await else {
        return per;
    };
    while let Some(Ok((subject, n))) = subjects.next().await {
        if let Some(service) = subject.split('.').nth(1) {
            *per.entry(service.to_owned()).or_insert(0) += n as u64;
        }
    }
    per
}

/// `streams`
pub async fn run(js: &jetstream::Context, all: bool) -> anyhow::Result<()> {
    let streams = collect(js).await?;
    if streams.is_empty() {
        println!("no streams (no service has provisioned them yet)");
        return Ok(());
    }
    let now = Utc::now();
    let last = |t: Option<DateTime<Utc>>| t.map_or("never".into(), |t| out::ago(t, now));
    let mut hidden = 0;
    for s in &streams {
        println!(
            "{}  messages {}  bytes {}  seq {}..{}",
            s.name,
            s.messages,
            out::bytes(s.bytes),
            s.first_seq,
            s.last_seq
        );
        let rows: Vec<Vec<String>> = s
            .consumers
            .iter()
            .filter(|c| {
                let shown = all || c.durable;
                hidden += usize::from(!shown);
                shown
            })
            .map(|c| {
                vec![
                    format!("  {}", c.name),
                    c.pending.to_string(),
                    c.ack_pending.to_string(),
                    c.redelivered.to_string(),
                    last(c.last_active),
                ]
            })
            .collect();
        if rows.is_empty() {
            println!("  (no durable consumers)");
        } else {
            print!(
                "{}",
                out::table(
                    &[
                        "  CONSUMER",
                        "PENDING",
                        "ACK_PENDING",
                        "REDELIVERED",
                        "LAST_ACTIVE"
                    ],
                    &rows
                )
            );
        }
        println!();
    }
    if hidden > 0 {
        println!("({hidden} ephemeral consumers not shown; --all shows them)\n");
    }

    // Per service: durable consumers are named after the consuming service.
    let dead = dead_letters_per_service(js).await;
    #[derive(Default)]
    struct Service {
        streams: Vec<String>,
        pending: u64,
        ack_pending: u64,
        redelivered: u64,
        last_active: Option<DateTime<Utc>>,
    }
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    for c in streams
        .iter()
        .flat_map(|s| &s.consumers)
        .filter(|c| c.durable)
    {
        let s = services.entry(c.name.clone()).or_default();
        s.streams.push(c.stream.clone());
        s.pending += c.pending;
        s.ack_pending += c.ack_pending;
        s.redelivered += c.redelivered;
        s.last_active = s.last_active.max(c.last_active);
    }
    for name in dead.keys() {
        services.entry(name.clone()).or_default();
    }
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|(name, s)| {
            vec![
                name.clone(),
                s.pending.to_string(),
                s.ack_pending.to_string(),
                s.redelivered.to_string(),
                dead.get(name).copied().unwrap_or(0).to_string(),
                last(s.last_active),
                if s.streams.is_empty() {
                    "-".into()
                } else {
                    s.streams.join(",")
                },
            ]
        })
        .collect();
    println!("per service");
    print!(
        "{}",
        out::table(
            &[
                "SERVICE",
                "PENDING",
                "ACK_PENDING",
                "REDELIVERED",
                "DEAD_LETTERS",
                "LAST_ACTIVE",
                "STREAMS"
            ],
            &rows
        )
    );
    Ok(())
}
