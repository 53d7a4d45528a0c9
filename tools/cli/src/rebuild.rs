//! `rebuild order` and `rebuild analytics`: the services' own rebuilds, with progress.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use indicatif::{MultiProgress, ProgressBar};
use jetmart_analytics::rebuild::{Phase, Progress, RebuildOptions};
use sqlx::postgres::PgPoolOptions;

use crate::out;

/// `rebuild order`
pub async fn order(database_url: &str) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(database_url)
        .await
        .context("connecting to the order database")?;
    let orders: i64 = sqlx::query_scalar("SELECT count(DISTINCT order_id) FROM order_events")
        .fetch_one(&pool)
        .await
        .context("reading the order event store (is this the order service's database?)")?;
    // projection::rebuild reports nothing until it is done, so a spinner it is.
    let spinner = out::spinner(format!(
        "rebuilding the order read model from {orders} orders' events"
    ));
    let started = Instant::now();
    let result = jetmart_order::projection::rebuild(&pool).await;
    spinner.finish_and_clear();
    let done = result.context("rebuilding the order read model")?;
    println!(
        "order read model rebuilt: {} orders ({} caught up during the swap) in {:.1}s",
        done.orders,
        done.caught_up,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `rebuild analytics`
pub async fn analytics(
    js: &jetstream::Context,
    redis_url: &str,
    marker_ttl: Duration,
) -> anyhow::Result<()> {
    let redis = jetmart_analytics::app::connect_redis(redis_url).context("--redis-url")?;
    let options = RebuildOptions {
        marker_ttl,
        ..Default::default()
    };
    let multi = MultiProgress::new();
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let started = Instant::now();
    let result = jetmart_analytics::rebuild::rebuild(js, &redis, &options, |p| match p {
        Progress::Started {
            previous,
            generation,
            targets,
        } => {
            let total: u64 = targets.iter().map(|(_, n)| n).sum();
            let _ = multi.println(format!(
                "rebuilding generation {generation} beside {previous}: up to {total} messages"
            ));
            for (stream, last) in targets {
                let bar = multi.add(out::bar(*last, &format!("{stream:<12}")));
                bars.insert(stream.clone(), bar);
            }
        }
        Progress::Replaying {
            stream,
            phase,
            sequence,
            last,
        } => {
            if let Some(bar) = bars.get(stream) {
                bar.set_length(*last);
                bar.set_position(*sequence);
                bar.set_message(match phase {
                    Phase::Replay => "replay",
                    Phase::CatchUp => "catching up",
                    Phase::AfterSwap => "after swap",
                });
            }
        }
        Progress::Swapped {
            previous,
            generation,
        } => {
            let _ = multi.println(format!(
                "swapped: generation {generation} is live (was {previous})"
            ));
        }
        Progress::Deleted { keys } => {
            let _ = multi.println(format!("deleted {keys} keys of old generations"));
        }
    })
    .await;
    for bar in bars.values() {
        bar.finish_and_clear();
    }
    let report = result.context("rebuilding the analytics read model")?;
    println!(
        "analytics read model rebuilt: generation {} ({} events replayed, {} caught up, {} skipped, {} old keys deleted) in {:.1}s",
        report.generation,
        report.replayed.applied,
        report.caught_up.applied,
        report.replayed.skipped + report.caught_up.skipped,
        report.deleted_keys,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
