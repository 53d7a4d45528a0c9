//! jetmartctl, the operator CLI of jetmart: dead letters (list, show, replay, purge), streams
//! and consumers, read-model rebuilds, demo orders and the end-to-end smoke test.
//!
//! - [`args`]: the command line and its help; [`connect`]: NATS without endless retries.
//! - [`dlq`]: the DEADLETTER stream; [`decode`]: payloads by `ce-type` via the descriptors.
//! - [`streams`], [`rebuild`], [`demo`], [`smoke`]: the other commands; [`out`]: printing.

pub mod args;
pub mod connect;
pub mod decode;
pub mod demo;
pub mod dlq;
pub mod out;
pub mod rebuild;
pub mod smoke;
pub mod streams;

use std::time::Duration;

use args::{Cli, Command, DlqCommand, RebuildTarget};

/// Runs one command. Errors are the command's failure (exit 1); usage errors never get here.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dlq { command } => {
            let js = connect::jetstream(&cli.nats).await?;
            match command {
                DlqCommand::List(a) => dlq::list(&js, &a.filter, a.limit).await,
                DlqCommand::Show { seq } => dlq::show(&js, seq).await,
                DlqCommand::Replay(a) if a.all => dlq::replay_all(&js, &a.filter()).await,
                DlqCommand::Replay(a) => dlq::replay_seqs(&js, &a.seqs).await,
                DlqCommand::Purge(a) => dlq::purge(&js, &a.filter, a.yes).await,
            }
        }
        Command::Streams(a) => streams::run(&connect::jetstream(&cli.nats).await?, a.all).await,
        Command::Rebuild { target } => match target {
            RebuildTarget::Order { database_url } => rebuild::order(&database_url).await,
            RebuildTarget::Analytics {
                redis_url,
                marker_ttl_secs,
            } => {
                let js = connect::jetstream(&cli.nats).await?;
                rebuild::analytics(&js, &redis_url, Duration::from_secs(marker_ttl_secs)).await
            }
        },
        Command::DemoOrders(a) => demo::run(&a).await,
        Command::Smoke(a) => smoke::run(&a).await,
    }
}
