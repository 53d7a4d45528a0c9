//! Runtime benchmark: events/s through outbox -> relay -> JetStream -> consumer -> Postgres effect,
//! with 1 and 2 consumer replicas, beside the raw limits measured in the same run (pipelined
//! JetStream publish, a Postgres outbox-like transaction). Prints a table; asserts nothing.
//!
//!     cargo bench -p jetmart-e2e --bench runtime            (JETMART_BENCH_EVENTS=N to resize)

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jetmart_e2e::fixtures::*;
use jetmart_runtime::consumer::{ConsumerRunner, PgProcessor, RunnerConfig};
use jetmart_runtime::metrics::RuntimeMetrics;
use jetmart_runtime::outbox::{Relay, RelayConfig};
use jetmart_testkit::{NatsServer, pg};
use tokio_util::sync::CancellationToken;

const WRITERS: usize = 8;

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("JETMART_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut rows = Vec::new();
    rows.push((
        "JetStream publish, pipelined (raw limit)",
        raw_publish(n * 2).await,
    ));
    rows.push((
        "Postgres outbox-like tx, 8 writers (raw limit)",
        raw_tx(n).await,
    ));
    rows.push((
        "outbox -> JetStream -> consumer -> effect, 1 replica",
        pipeline(n, 1).await,
    ));
    rows.push((
        "outbox -> JetStream -> consumer -> effect, 2 replicas",
        pipeline(n, 2).await,
    ));
    println!(
        "\njetmart runtime benchmark ({n} events, {} cores)",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    println!("{:<58} {:>12}", "measure", "per second");
    for (name, rate) in rows {
        println!("{name:<58} {rate:>12.0}");
    }
}

async fn raw_publish(n: usize) -> f64 {
    let nats = NatsServer::start().await.unwrap();
    let js = nats.jetstream().await.unwrap();
    let db = pg::fresh_database().await.unwrap();
    prepare(&db.pool().await.unwrap(), &js).await;
    let started = Instant::now();
    let mut acks = FuturesUnordered::new();
    for i in 0..n {
        let e = placed(&format!("o-{i}"));
        let ack = js
            .send_publish(
                e.subject.clone(),
                async_nats::jetstream::message::PublishMessage::build()
                    .headers(e.nats_headers())
                    .payload(e.payload.clone()),
            )
            .await
            .unwrap();
        acks.push(ack.into_future());
        // Keep a bounded window in flight, as the relay does per round.
        while acks.len() >= 1000 {
            acks.next().await.unwrap().unwrap();
        }
    }
    while let Some(ack) = acks.next().await {
        ack.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn raw_tx(n: usize) -> f64 {
    let db = pg::fresh_database().await.unwrap();
    let pool = db.pool().await.unwrap();
    let nats = NatsServer::start().await.unwrap();
    prepare(&pool, &nats.jetstream().await.unwrap()).await;
    let started = Instant::now();
    write_events(&pool, n).await;
    n as f64 / started.elapsed().as_secs_f64()
}

/// `n` transactions, each a state row plus an outbox row, from WRITERS concurrent writers.
async fn write_events(pool: &sqlx::PgPool, n: usize) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (pool, next) = (pool.clone(), next.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let e = placed(&format!("o-{i}"));
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("INSERT INTO started (event_id, instance) VALUES ($1, 'writer')")
                    .bind(e.id)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                jetmart_runtime::outbox::enqueue(&mut tx, &[e])
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
}

async fn pipeline(n: usize, replicas: usize) -> f64 {
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
