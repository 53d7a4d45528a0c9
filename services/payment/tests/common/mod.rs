//! Shared test harness: real NATS and Postgres from jetmart_testkit, the payment app running as
//! a task on port 0, upstream events published straight to JetStream, the PAYMENT stream read
//! back. Every wait polls with a deadline; nothing sleeps a fixed time.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull::OrderedConfig};
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use jetmart_payment::app::{self, BreakerProbe};
use jetmart_payment::config::Config;
use jetmart_payment::domain::PaymentGateway;
use jetmart_proto::common::v1::Money;
use jetmart_proto::inventory::v1::StockReserved;
use jetmart_proto::order::v1::{OrderCancelled, OrderConfirmed};
use jetmart_proto::payment::v1::payment_service_client::PaymentServiceClient;
use jetmart_proto::payment::v1::{GetPaymentRequest, Payment};
use jetmart_runtime::OutgoingEvent;
use jetmart_runtime::catalog::{DEADLETTER, INVENTORY, ORDER, PAYMENT};
use jetmart_runtime::provision::{self, StreamSettings};
use jetmart_testkit::{NatsServer, TestDatabase};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(20);

pub use jetmart_testkit::wait_until;

/// The payment service under test and the servers it runs against.
pub struct Harness {
    pub js: jetstream::Context,
    pub pool: PgPool,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub breaker: BreakerProbe,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), jetmart_kit::ServiceError>>,
    // Dropped last: the servers outlive the app.
    _db: TestDatabase,
    _nats: NatsServer,
}

impl Harness {
    /// Starts the app with fast redeliveries plus `extra` flags.
    pub async fn start(extra: &[&str]) -> Harness {
        Self::start_inner(extra, None).await
    }

    /// As [`Harness::start`], around the caller's gateway.
    pub async fn start_with_gateway(extra: &[&str], gateway: Arc<dyn PaymentGateway>) -> Harness {
        Self::start_inner(extra, Some(gateway)).await
    }

    async fn start_inner(extra: &[&str], gateway: Option<Arc<dyn PaymentGateway>>) -> Harness {
        let nats = NatsServer::start().await.expect("nats");
        let db = jetmart_testkit::fresh_database().await.expect("database");
        let url = nats.url();
        let mut args = vec![
            "jetmart-payment",
            "--nats-url",
            &url,
            "--database-url",
            db.url(),
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--shutdown-deadline-secs",
            "5",
            "--redelivery-initial-ms",
            "20",
            "--redelivery-max-ms",
            "200",
        ];
        args.extend_from_slice(extra);
        let config = Config::try_parse_from(args).expect("config");
        config.validate().expect("valid config");
        let app = match gateway {
            Some(g) => app::build_with_gateway(config, g).await,
            None => app::build(config).await,
        }
        .expect("build");
        let (grpc, http, breaker) = (app.grpc_addr(), app.http_addr(), app.breaker());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run(shutdown.clone()));

        let js = nats.jetstream().await.expect("jetstream");
        // The same settings the service provisions with, so whoever is first is fine.
        provision::ensure_streams(
            &js,
            &[INVENTORY, ORDER, PAYMENT, DEADLETTER],
            &StreamSettings::default(),
        )
        .await
        .expect("streams");
        let pool = db.pool().await.expect("pool");
        Harness {
            js,
            pool,
            grpc,
            http,
            breaker,
            shutdown,
            task,
            _db: db,
            _nats: nats,
        }
    }

    /// Drains the app and checks it stopped cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("drained in time")
            .expect("app task");
        result.expect("app ran cleanly");
    }

    pub async fn client(&self) -> PaymentServiceClient<Channel> {
        PaymentServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("grpc connect")
    }

    pub async fn get_payment(&self, order_id: Uuid) -> Result<Payment, tonic::Status> {
        let mut client = self.client().await;
        client
            .get_payment(GetPaymentRequest {
                order_id: order_id.to_string(),
            })
            .await
            .map(|r| r.into_inner().payment.expect("payment"))
    }

    /// Publishes as the upstream service's relay would.
    pub async fn publish(&self, e: &OutgoingEvent) {
        self.publish_with_headers(e, e.nats_headers()).await;
    }

    /// A second copy of an already published event (same `ce-id`), as a redelivery after a lost
    /// ack looks to the consumer; a fresh `Nats-Msg-Id` gets it past the stream's deduplication.
    pub async fn publish_copy(&self, e: &OutgoingEvent) {
        let mut headers = e.nats_headers();
        headers.insert("Nats-Msg-Id", Uuid::now_v7().to_string().as_str());
        self.publish_with_headers(e, headers).await;
    }

    async fn publish_with_headers(&self, e: &OutgoingEvent, headers: async_nats::HeaderMap) {
        self.js
            .send_publish(
                e.subject.clone(),
                jetstream::message::PublishMessage::build()
                    .headers(headers)
                    .payload(e.payload.clone()),
            )
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }

    /// Every PAYMENT event of an order, in stream order, as (ce-type, causation id, payload).
    pub async fn payment_events(&self, order_id: Uuid) -> Vec<StreamEvent> {
        read_subject(&self.js, "PAYMENT", &format!("payment.*.{order_id}")).await
    }

    /// Event types of an order's PAYMENT events.
    pub async fn payment_event_types(&self, order_id: Uuid) -> Vec<String> {
        self.payment_events(order_id)
            .await
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }

    /// Waits until the order's PAYMENT events are exactly `types` (in order).
    pub async fn wait_events(&self, order_id: Uuid, types: &[&str]) {
        wait_until(&format!("events {types:?} of {order_id}"), WAIT, || async {
            self.payment_event_types(order_id).await == types
        })
        .await;
    }

    /// Waits until the payment consumer has committed the event with this id.
    pub async fn wait_processed(&self, event_id: Uuid) {
        wait_until(&format!("event {event_id} processed"), WAIT, || async {
            scalar(
                &self.pool,
                &format!(
                    "SELECT count(*) FROM jetmart_processed WHERE consumer = 'payment' AND event_id = '{event_id}'"
                ),
            )
            .await
                == 1
        })
        .await;
    }

    /// Waits until the payment consumer on `stream` holds nothing (all delivered and acked).
    pub async fn wait_drained(&self, stream: &str) {
        wait_until(
            &format!("consumer payment on {stream} drained"),
            WAIT,
            || async {
                let Ok(s) = self.js.get_stream(stream).await else {
                    return false;
                };
                let Ok(mut c) = s
                    .get_consumer::<jetstream::consumer::pull::Config>("payment")
                    .await
                else {
                    return false;
                };
                c.info()
                    .await
                    .is_ok_and(|i| i.num_pending == 0 && i.num_ack_pending == 0)
            },
        )
        .await;
    }

    /// Messages in a stream.
    pub async fn stream_len(&self, stream: &str) -> u64 {
        let mut s = self.js.get_stream(stream).await.expect("stream");
        s.info().await.expect("stream info").state.messages
    }

    pub async fn metrics(&self) -> String {
        http_get(self.http, "/metrics").await
    }

    /// The value of one metric sample line starting with `prefix` (0 when absent).
    pub async fn metric(&self, prefix: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// `outcome` of each gateway attempt of an order, in order, as `OPERATION:OUTCOME`.
    pub async fn attempts(&self, order_id: Uuid) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT operation || ':' || outcome FROM payment_gateway_attempts
             WHERE order_id = $1 ORDER BY attempt_id",
        )
        .bind(order_id)
        .fetch_all(&self.pool)
        .await
        .expect("attempts")
    }
}

#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub event_type: String,
    pub source: String,
    pub causation_id: Option<String>,
    pub payload: Bytes,
}

async fn read_subject(js: &jetstream::Context, stream: &str, filter: &str) -> Vec<StreamEvent> {
    let s = js.get_stream(stream).await.expect("stream");
    let consumer = s
        .create_consumer(OrderedConfig {
            filter_subject: filter.to_owned(),
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    let total = consumer.cached_info().num_pending as usize;
    let mut out = Vec::with_capacity(total);
    if total == 0 {
        return out;
    }
    let mut messages = consumer.messages().await.expect("messages");
    while out.len() < total {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("stream read")
            .expect("message")
            .expect("message ok");
        let header = |name: &str| {
            m.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        out.push(StreamEvent {
            event_type: header("ce-type").unwrap_or_default(),
            source: header("ce-source").unwrap_or_default(),
            causation_id: header("jetmart-causation-id"),
            payload: m.payload.clone(),
        });
    }
    out
}

pub async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// A plain HTTP/1.0 GET (the ops endpoints are tiny; no client library needed).
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut body = String::new();
    s.read_to_string(&mut body).await.expect("read");
    body
}

pub fn money(amount_minor: i64, currency: &str) -> Money {
    Money {
        amount_minor,
        currency: currency.into(),
    }
}

/// `inventory.reserved` for an order, as inventory publishes it.
pub fn reserved(order_id: Uuid, amount_minor: i64, token: &str) -> OutgoingEvent {
    let e = StockReserved {
        order_id: order_id.to_string(),
        lines: Vec::new(),
        total: Some(money(amount_minor, "EUR")),
        customer_id: "customer-1".into(),
        payment_token: token.into(),
        reserved_at: None,
    };
    OutgoingEvent::new("inventory", &order_id.to_string(), &e)
}

pub fn confirmed(order_id: Uuid, amount_minor: i64) -> OutgoingEvent {
    let e = OrderConfirmed {
        order_id: order_id.to_string(),
        customer_id: "customer-1".into(),
        total: Some(money(amount_minor, "EUR")),
        ..Default::default()
    };
    OutgoingEvent::new("order", &order_id.to_string(), &e)
}

pub fn cancelled(order_id: Uuid, amount_minor: i64) -> OutgoingEvent {
    let e = OrderCancelled {
        order_id: order_id.to_string(),
        customer_id: "customer-1".into(),
        total: Some(money(amount_minor, "EUR")),
        detail: "customer changed their mind".into(),
        ..Default::default()
    };
    OutgoingEvent::new("order", &order_id.to_string(), &e)
}

pub const AUTHORIZED: &str = "jetmart.payment.v1.PaymentAuthorized";
pub const DECLINED: &str = "jetmart.payment.v1.PaymentDeclined";
pub const CAPTURED: &str = "jetmart.payment.v1.PaymentCaptured";
pub const VOIDED: &str = "jetmart.payment.v1.PaymentVoided";
