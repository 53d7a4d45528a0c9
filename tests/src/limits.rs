//! The raw limits every benchmark prints beside its own figures, measured on the same machine in
//! the same run: pipelined JetStream publish and a Postgres outbox-like transaction.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jetmart_testkit::{NatsServer, pg};

use crate::fixtures::{placed, prepare};

/// Concurrent writers of the transaction probe.
pub const WRITERS: usize = 8;

/// Events/s JetStream stores with a bounded window of publishes in flight.
pub async fn jetstream_publish(n: usize) -> f64 {
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

/// Transactions/s of a state row plus an outbox row, from [`WRITERS`] writers.
pub async fn outbox_transactions(n: usize) -> f64 {
    let db = pg::fresh_database().await.unwrap();
    let pool = db.pool().await.unwrap();
    let nats = NatsServer::start().await.unwrap();
    prepare(&pool, &nats.jetstream().await.unwrap()).await;
    let started = Instant::now();
    write_events(&pool, n).await;
    n as f64 / started.elapsed().as_secs_f64()
}

/// `n` transactions, each a state row plus an outbox row, from WRITERS concurrent writers.
pub async fn write_events(pool: &sqlx::PgPool, n: usize) {
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
