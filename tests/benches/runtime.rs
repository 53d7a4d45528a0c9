//! Runtime benchmark: events/s through outbox -> relay -> JetStream -> consumer -> Postgres effect,
//! with 1 and 2 consumer replicas, one event per transaction and in batches of up to 32, beside the raw limits measured in the same run (pipelined
//! JetStream publish, a Postgres outbox-like transaction). Prints a table; asserts nothing.
//!
//!     cargo bench -p jetmart-e2e --bench runtime            (JETMART_BENCH_EVENTS=N to resize)

use std::time::{Duration, Instant};

use jetmart_e2e::fixtures::*;
use jetmart_e2e::limits::{self, write_events};
use jetmart_runtime::consumer::{ConsumerRunner, PgProcessor, RunnerConfig};
use jetmart_runtime::metrics::RuntimeMetrics;
use jetmart_runtime::outbox::{Relay, RelayConfig};
use jetmart_testkit::{NatsServer, pg};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("JETMART_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut rows = Vec::new();
    rows.push((
        "JetStream publish, pipelined (raw limit)",
        limits::jetstream_publish(n * 2).await,
    ));
    rows.push((
        "Postgres outbox-like tx, 8 writers (raw limit)",
        limits::outbox_transactions(n).await,
    ));
    for (name, replicas, batch) in [
        ("outbox -> JetStream -> consumer -> effect, 1 replica", 1, 1),
        (
            "outbox -> JetStream -> consumer -> effect, 2 replicas",
            2,
            1,
        ),
        ("same, consumer batches of up to 32, 1 replica", 1, 32),
        ("same, consumer batches of up to 32, 2 replicas", 2, 32),
    ] {
        rows.push((name, pipeline(n, replicas, batch).await));
    }
    println!(
        "\njetmart runtime benchmark ({n} events, {} cores)",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    println!("{:<58} {:>12}", "measure", "per second");
    for (name, rate) in rows {
        println!("{name:<58} {rate:>12.0}");
    }
}

async fn pipeline(n: usize, replicas: usize, batch: usize) -> f64 {
    let nats = NatsServer::start().await.unwrap();
    let js = nats.jetstream().await.unwrap();
    let upstream = pg::fresh_database().await.unwrap();
    let downstream = pg::fresh_database().await.unwrap();
    let (up, down) = (
        upstream.pool().await.unwrap(),
        downstream.pool().await.unwrap(),
    );
    prepare(&up, &js).await;
    prepare(&down, &js).await;
    let shutdown = CancellationToken::new();
    let metrics = RuntimeMetrics::unregistered();
    tokio::spawn(
        Relay::new(
            up.clone(),
            js.clone(),
            RelayConfig::default(),
            metrics.clone(),
        )
        .run(shutdown.clone()),
    );
    for r in 0..replicas {
        let mut config = RunnerConfig::new(consumer_spec("bench"));
        config.consumer.ack_wait = Duration::from_secs(30);
        config.batch = batch;
        let handler = EffectHandler::new(&format!("r{r}"), &down);
        let runner = ConsumerRunner::new(
            js.clone(),
            config,
            PgProcessor::new(down.clone(), handler),
            metrics.clone(),
        );
        tokio::spawn(runner.run(shutdown.clone()));
    }
    let started = Instant::now();
    write_events(&up, n).await;
    wait_until("every effect", Duration::from_secs(600), || async {
        count(&down, "SELECT count(*) FROM effects").await as usize >= n
    })
    .await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    shutdown.cancel();
    rate
}
