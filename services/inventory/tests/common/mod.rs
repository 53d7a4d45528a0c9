//! Shared fixtures of the inventory integration tests: real NATS, Postgres and Redis from
//! jetmart_testkit, the service started with `app::build` + `run` on port 0, order events
//! published as the order service's relay would, and polling helpers (no fixed sleeps).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream;
use clap::Parser;
use jetmart_inventory::adjust::{self, AdjustRequest};
use jetmart_inventory::app;
use jetmart_inventory::config::Config;
use jetmart_proto::common::v1::{Money, OrderLine};
use jetmart_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use jetmart_proto::order::v1::{OrderCancelled, OrderConfirmed, OrderPlaced};
use jetmart_runtime::OutgoingEvent;
use jetmart_runtime::catalog::{DEADLETTER, INVENTORY, ORDER};
use jetmart_runtime::envelope::header;
use jetmart_runtime::provision::{self, StreamSettings};
use jetmart_testkit::{NatsServer, RedisServer, TestDatabase};
use sqlx::{PgPool, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const WAIT: Duration = Duration::from_secs(60);

pub use jetmart_testkit::wait_until;

/// The servers of one test.
pub struct Env {
    pub nats: NatsServer,
    pub db: TestDatabase,
    pub redis: RedisServer,
    pub js: jetstream::Context,
}

impl Env {
    pub async fn start() -> Env {
        let (nats, db, redis) = tokio::join!(
            NatsServer::start(),
            jetmart_testkit::pg::fresh_database(),
            RedisServer::start()
        );
        let (nats, db, redis) = (
            nats.expect("nats"),
            db.expect("postgres"),
            redis.expect("redis"),
        );
        let js = nats.jetstream().await.expect("jetstream");
        // The services provision these too (same settings); done here so tests can publish at once.
        provision::ensure_streams(
            &js,
            &[ORDER, INVENTORY, DEADLETTER],
            &StreamSettings::default(),
        )
        .await
        .expect("streams");
        Env {
            nats,
            db,
            redis,
            js,
        }
    }

    pub fn config(&self, extra: &[&str]) -> Config {
        let nats = self.nats.url();
        let redis = self.redis.url();
        let mut args = vec![
            "jetmart-inventory",
            "--nats-url",
            &nats,
            "--database-url",
            self.db.url(),
            "--redis-url",
            &redis,
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--shutdown-deadline-secs",
            "15",
            "--database-max-connections",
            "12",
        ];
        args.extend_from_slice(extra);
        Config::try_parse_from(args).expect("config")
    }

    /// Builds and runs one inventory instance.
    pub async fn start_app(&self, extra: &[&str]) -> Running {
        let app = app::build(self.config(extra)).await.expect("build");
        let grpc = app.grpc_addr();
        let http = app.http_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run(shutdown.clone()));
        Running {
            grpc,
            http,
            shutdown,
            task,
        }
    }

    pub async fn pool(&self) -> PgPool {
        self.db.pool().await.expect("pool")
    }

    pub async fn redis_conn(&self) -> redis::aio::MultiplexedConnection {
        self.redis.connection().await.expect("redis connection")
    }
}

/// A running instance.
pub struct Running {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), jetmart_kit::ServiceError>>,
}

impl Running {
    pub async fn client(&self) -> InventoryServiceClient<Channel> {
        InventoryServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("grpc connect")
    }

    /// Drains and checks it stopped cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("clean drain");
    }

    /// GET on the ops port (HTTP/1.0, whole body).
    pub async fn http_get(&self, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(self.http)
            .await
            .expect("http connect");
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("http write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("http read");
        out
    }

    /// Order events this instance applied (from its /metrics).
    pub async fn applied_events(&self) -> u64 {
        let metrics = self.http_get("/metrics").await;
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("jetmart_events_handled_total{")
                    && l.to_lowercase().contains("outcome=\"applied\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

/// Gives `sku` `quantity` more units (creating it with `threshold`), as an operator would.
pub async fn stock(pool: &PgPool, sku: &str, quantity: i64, threshold: i64) {
    adjust::adjust_stock(
        pool,
        &AdjustRequest {
            sku: sku.into(),
            delta: quantity,
            reason: "test stock".into(),
            idempotency_key: format!("test-stock-{}", uuid::Uuid::now_v7()),
            new_sku_threshold: threshold,
            correlation_id: None,
        },
    )
    .await
    .expect("stock");
}

pub fn money(amount_minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: "USD".into(),
    })
}

pub fn placed_event(order_id: &str, lines: &[(&str, i32)]) -> OutgoingEvent {
    let lines: Vec<OrderLine> = lines
        .iter()
        .map(|(sku, quantity)| OrderLine {
            sku: (*sku).into(),
            quantity: *quantity,
            unit_price: money(100),
        })
        .collect();
    let total: i64 = lines.iter().map(|l| 100 * i64::from(l.quantity)).sum();
    let event = OrderPlaced {
        order_id: order_id.into(),
        customer_id: format!("cust-{order_id}"),
        customer_email: "someone@example.com".into(),
        lines,
        total: money(total),
        payment_token: format!("tok-{order_id}"),
        placed_at: None,
    };
    OutgoingEvent::new("order", order_id, &event)
}

pub fn cancelled_event(order_id: &str) -> OutgoingEvent {
    OutgoingEvent::new(
        "order",
        order_id,
        &OrderCancelled {
            order_id: order_id.into(),
            ..Default::default()
        },
    )
}

pub fn confirmed_event(order_id: &str) -> OutgoingEvent {
    OutgoingEvent::new(
        "order",
        order_id,
        &OrderConfirmed {
            order_id: order_id.into(),
            ..Default::default()
        },
    )
}

/// Publishes as another service's relay would and awaits the stream's ack.
pub async fn publish(js: &jetstream::Context, e: &OutgoingEvent) {
    js.send_publish(
        e.subject.clone(),
        jetstream::message::PublishMessage::build()
            .headers(e.nats_headers())
            .payload(e.payload.clone()),
    )
    .await
    .expect("publish")
    .await
    .expect("publish ack");
}

/// Re-publishes the same event (same ce-id) under a new Nats-Msg-Id, so JetStream's duplicate
/// window lets it through and only the service's own guards stand between it and a second effect.
pub async fn publish_again(js: &jetstream::Context, e: &OutgoingEvent) {
    let mut copy = e.clone();
    copy.headers
        .insert(header::NATS_MSG_ID.into(), uuid::Uuid::now_v7().to_string());
    publish(js, &copy).await;
}

pub async fn place(
    js: &jetstream::Context,
    order_id: &str,
    lines: &[(&str, i32)],
) -> OutgoingEvent {
    let e = placed_event(order_id, lines);
    publish(js, &e).await;
    e
}

/// (available, reserved, sold) of a SKU; None if it has no row.
pub async fn level(pool: &PgPool, sku: &str) -> Option<(i64, i64, i64)> {
    sqlx::query("SELECT available, reserved, sold FROM inventory_stock WHERE sku = $1")
        .bind(sku)
        .fetch_optional(pool)
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

pub async fn order_status(pool: &PgPool, order_id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM inventory_orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

pub async fn wait_status(pool: &PgPool, order_id: &str, status: &str) {
    wait_until(&format!("order {order_id} {status}"), WAIT, || async {
        order_status(pool, order_id).await.as_deref() == Some(status)
    })
    .await;
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Payloads of the events written to the outbox on exactly `subject`, in order.
pub async fn outbox<E: prost::Message + Default>(pool: &PgPool, subject: &str) -> Vec<E> {
    let rows: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT payload FROM jetmart_outbox WHERE subject = $1 ORDER BY seq")
            .bind(subject)
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|p| E::decode(p.as_slice()).expect("decode"))
        .collect()
}

pub async fn outbox_count(pool: &PgPool, subject_like: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jetmart_outbox WHERE subject LIKE $1")
        .bind(subject_like)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until the durable consumer `inventory` has delivered and acknowledged every message
/// of ORDER (each effect committed, its cache refresh done).
pub async fn wait_drained(js: &jetstream::Context) {
    let stream = js.get_stream("ORDER").await.expect("ORDER");
    wait_until("consumer inventory drained", WAIT, || {
        let mut stream = stream.clone();
        async move {
            let last = match stream.info().await {
                Ok(info) => info.state.last_sequence,
                Err(_) => return false,
            };
            match stream.consumer_info("inventory").await {
                Ok(c) => {
                    c.num_pending == 0
                        && c.num_ack_pending == 0
                        && c.ack_floor.stream_sequence >= last
                }
                Err(_) => false,
            }
        }
    })
    .await;
}

/// Waits until every outbox row is published, then returns the last message on `subject`
/// read back from JetStream.
pub async fn published(
    js: &jetstream::Context,
    pool: &PgPool,
    subject: &str,
) -> jetstream::message::StreamMessage {
    wait_until("outbox published", WAIT, || async {
        count(
            pool,
            "SELECT count(*) FROM jetmart_outbox WHERE published_at IS NULL",
        )
        .await
            == 0
    })
    .await;
    let stream = js.get_stream("INVENTORY").await.expect("INVENTORY");
    stream
        .direct_get_last_for_subject(subject)
        .await
        .expect("published message")
}

/// The ledger explains every SKU: replaying its entries in order gives each `*_after`, no level
/// was ever negative, and the sums equal the current row.
pub async fn assert_ledger_consistent(pool: &PgPool) {
    let rows = sqlx::query(
        "SELECT sku, available_delta, reserved_delta, sold_delta, available_after, reserved_after, sold_after
         FROM inventory_ledger ORDER BY sku, seq",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut current: std::collections::BTreeMap<String, (i64, i64, i64)> = Default::default();
    for r in &rows {
        let sku: String = r.get(0);
        let (da, dr, ds): (i64, i64, i64) = (r.get(1), r.get(2), r.get(3));
        let after: (i64, i64, i64) = (r.get(4), r.get(5), r.get(6));
        let prev = current.entry(sku.clone()).or_default();
        let next = (prev.0 + da, prev.1 + dr, prev.2 + ds);
        assert_eq!(next, after, "ledger of {sku} does not replay");
        assert!(
            after.0 >= 0 && after.1 >= 0 && after.2 >= 0,
            "ledger of {sku} went negative: {after:?}"
        );
        *prev = next;
    }
    for (sku, sums) in &current {
        assert_eq!(
            level(pool, sku).await,
            Some(*sums),
            "stock row of {sku} differs from its ledger"
        );
    }
    let skus = count(
        pool,
        "SELECT count(*) FROM inventory_stock WHERE available + reserved + sold > 0",
    )
    .await;
    assert!(
        skus as usize <= current.len(),
        "stock without ledger entries"
    );
}

/// The cached entry of a SKU as (version, available, reserved, sold), if any.
pub async fn cached(
    conn: &mut redis::aio::MultiplexedConnection,
    sku: &str,
) -> Option<(i64, i64, i64, i64)> {
    let fields: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
        .arg(jetmart_inventory::cache::key(sku))
        .query_async(conn)
        .await
        .ok()?;
    Some((
        *fields.get("v")?,
        *fields.get("a")?,
        *fields.get("r")?,
        *fields.get("s")?,
    ))
}
