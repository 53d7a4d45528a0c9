//! Shared harness of the survey tests: the service against real NATS and Postgres, orders
//! published as `order.confirmed` with proper envelopes, the SURVEY stream read back, and a
//! minimal HTTP/1.1 client for the answer form.
#![allow(dead_code)] // each test binary uses its own part of the harness

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use jetmart_proto::common::v1::{Money, OrderLine};
use jetmart_proto::order::v1::OrderConfirmed;
use jetmart_proto::survey::v1::survey_service_client::SurveyServiceClient;
use jetmart_proto::survey::v1::{SurveyCompleted, SurveyRequested};
use jetmart_runtime::OutgoingEvent;
use jetmart_survey::app;
use jetmart_survey::config::Config;
pub use jetmart_testkit::wait_until;
use jetmart_testkit::{NatsServer, TestDatabase, pg};
use prost::Message;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use uuid::Uuid;

pub const PUBLIC_URL: &str = "https://survey.jetmart.test";
pub const WAIT: Duration = Duration::from_secs(20);

/// NATS and a database, shared by one or more service replicas.
pub struct Infra {
    pub nats: NatsServer,
    pub db: TestDatabase,
    pub pool: PgPool,
    pub js: jetstream::Context,
}

impl Infra {
    pub async fn start() -> Infra {
        let nats = NatsServer::start().await.unwrap();
        let db = pg::fresh_database().await.unwrap();
        let pool = db.pool().await.unwrap();
        let js = nats.jetstream().await.unwrap();
        Infra { nats, db, pool, js }
    }
}

/// One running replica.
pub struct Replica {
    pub grpc: SurveyServiceClient<Channel>,
    pub http: SocketAddr,
    pub shutdown: CancellationToken,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn config(infra: &Infra, extra: &[&str]) -> Config {
    let url = infra.nats.url();
    let mut args = vec![
        "jetmart-survey",
        "--nats-url",
        &url,
        "--database-url",
        infra.db.url(),
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--public-url",
        PUBLIC_URL,
        "--outbox-scrub-interval",
        "200ms",
    ];
    args.extend_from_slice(extra);
    Config::try_parse_from(args).unwrap()
}

/// Starts a replica with `extra` flags and waits until it is ready (streams provisioned).
pub async fn replica(infra: &Infra, extra: &[&str]) -> Replica {
    let config = config(infra, extra);
    config.validate().unwrap();
    let app = app::build(config).await.unwrap();
    let (grpc_addr, http) = (app.grpc_addr(), app.http_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    wait_until("survey ready", WAIT, || async move {
        get(http, "/readyz").await.map(|r| r.status) == Some(200)
    })
    .await;
    let grpc = SurveyServiceClient::connect(format!("http://{grpc_addr}"))
        .await
        .unwrap();
    Replica {
        grpc,
        http,
        shutdown,
    }
}

/// Infra plus one replica.
pub struct Running {
    pub infra: Infra,
    pub app: Replica,
}

pub async fn start(extra: &[&str]) -> Running {
    let infra = Infra::start().await;
    let app = replica(&infra, extra).await;
    Running { infra, app }
}

/// A confirmed order as the order service would announce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: Uuid,
    pub customer: String,
    pub currency: &'static str,
    pub total: i64,
    pub confirmed_at: DateTime<Utc>,
}

/// A fixed base time, so runs and replays see the same event times.
pub fn day(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000, 0).unwrap() + TimeDelta::days(n)
}

impl Order {
    pub fn new(customer: &str, currency: &'static str, total: i64, at: DateTime<Utc>) -> Order {
        Order {
            id: Uuid::now_v7(),
            customer: customer.into(),
            currency,
            total,
            confirmed_at: at,
        }
    }

    pub fn event(&self) -> OrderConfirmed {
        let money = |amount_minor| Money {
            amount_minor,
            currency: self.currency.into(),
        };
        OrderConfirmed {
            order_id: self.id.to_string(),
            customer_id: self.customer.clone(),
            customer_email: format!("{}@example.com", self.customer),
            lines: vec![OrderLine {
                sku: "SKU-1".into(),
                quantity: 1,
                unit_price: Some(money(self.total)),
            }],
            total: Some(money(self.total)),
            payment_id: Uuid::now_v7().to_string(),
            confirmed_at: Some(prost_types::Timestamp {
                seconds: self.confirmed_at.timestamp(),
                nanos: 0,
            }),
        }
    }

    /// A fresh envelope for this order's order.confirmed.
    pub fn envelope(&self) -> OutgoingEvent {
        OutgoingEvent::new("order", &self.id.to_string(), &self.event())
    }
}

pub async fn publish(js: &jetstream::Context, event: &OutgoingEvent) {
    js.send_publish(
        event.subject.clone(),
        jetstream::message::PublishMessage::build()
            .headers(event.nats_headers())
            .payload(event.payload.clone()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// Publishes each order's order.confirmed in turn (stream order = slice order); returns the
/// envelopes.
pub async fn publish_orders(js: &jetstream::Context, orders: &[Order]) -> Vec<OutgoingEvent> {
    let mut sent = Vec::new();
    for o in orders {
        let e = o.envelope();
        publish(js, &e).await;
        sent.push(e);
    }
    sent
}

/// What the rules decided per order, as recorded by the service.
pub async fn decisions(pool: &PgPool) -> BTreeMap<Uuid, String> {
    sqlx::query_as::<_, (Uuid, String)>("SELECT order_id, decision FROM survey_orders")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Waits until every order has a decision and every outgoing event is published; returns the
/// decisions.
pub async fn settle(infra: &Infra, orders: &[Order]) -> BTreeMap<Uuid, String> {
    let pool = &infra.pool;
    wait_until("every order decided", WAIT, || async move {
        let d = decisions(pool).await;
        orders.iter().all(|o| d.contains_key(&o.id))
    })
    .await;
    outbox_drained(pool).await;
    decisions(pool).await
}

pub async fn outbox_drained(pool: &PgPool) {
    wait_until("outbox published", WAIT, || async move {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jetmart_outbox WHERE published_at IS NULL")
                .fetch_one(pool)
                .await
                .unwrap();
        left == 0
    })
    .await;
}

/// A message of the SURVEY stream.
#[derive(Debug, Clone)]
pub struct Published {
    pub subject: String,
    pub headers: BTreeMap<String, String>,
    pub payload: bytes::Bytes,
}

impl Published {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// Every message on the SURVEY stream, in order.
pub async fn survey_stream(js: &jetstream::Context) -> Vec<Published> {
    let mut stream = js.get_stream("SURVEY").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let Ok(m) = stream.get_raw_message(seq).await else {
            continue;
        };
        let headers = m
            .headers
            .iter()
            .map(|(k, v)| {
                let v = v.first().map(|v| v.as_str().to_owned()).unwrap_or_default();
                (k.to_string(), v)
            })
            .collect();
        out.push(Published {
            subject: m.subject.to_string(),
            headers,
            payload: m.payload,
        });
    }
    out
}

pub async fn requested(js: &jetstream::Context) -> Vec<(Published, SurveyRequested)> {
    survey_stream(js)
        .await
        .into_iter()
        .filter(|m| m.header("ce-type") == "jetmart.survey.v1.SurveyRequested")
        .map(|m| {
            let e = SurveyRequested::decode(m.payload.clone()).unwrap();
            (m, e)
        })
        .collect()
}

pub async fn completed(js: &jetstream::Context) -> Vec<(Published, SurveyCompleted)> {
    survey_stream(js)
        .await
        .into_iter()
        .filter(|m| m.header("ce-type") == "jetmart.survey.v1.SurveyCompleted")
        .map(|m| {
            let e = SurveyCompleted::decode(m.payload.clone()).unwrap();
            (m, e)
        })
        .collect()
}

/// Publishes one eligible order per customer (default rules) and returns their invitations in
/// order, read from the SURVEY stream.
pub async fn invite(infra: &Infra, customers: &[&str]) -> Vec<SurveyRequested> {
    let orders: Vec<Order> = customers
        .iter()
        .map(|c| Order::new(c, "EUR", 2_500, day(0)))
        .collect();
    publish_orders(&infra.js, &orders).await;
    let d = settle(infra, &orders).await;
    assert!(orders.iter().all(|o| d[&o.id] == "invited"), "{d:?}");
    let js = &infra.js;
    wait_until("invitations on the SURVEY stream", WAIT, || async move {
        requested(js).await.len() >= customers.len()
    })
    .await;
    let all = requested(js).await;
    orders
        .iter()
        .map(|o| {
            all.iter()
                .find(|(_, e)| e.order_id == o.id.to_string())
                .expect("invitation for the order")
                .1
                .clone()
        })
        .collect()
}

/// The path of a survey link (`/s/<token>`).
pub fn path_of(link: &str) -> String {
    link.strip_prefix(PUBLIC_URL)
        .expect("link under SURVEY_PUBLIC_URL")
        .to_owned()
}

/// Counts rows changed by answers: responses, spent tokens, survey.completed in the outbox.
pub async fn answer_effects(pool: &PgPool) -> (i64, i64, i64) {
    let q = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    (
        q("SELECT count(*) FROM survey_responses").await,
        q("SELECT count(*) FROM survey_invitations WHERE used_at IS NOT NULL").await,
        q("SELECT count(*) FROM jetmart_outbox WHERE subject LIKE 'survey.completed.%'").await,
    )
}

/// Moves an invitation's expiry into the past.
pub async fn expire(pool: &PgPool, survey_id: &str) {
    let id = Uuid::parse_str(survey_id).unwrap();
    sqlx::query(
        "UPDATE survey_invitations SET requested_at = now() - interval '2 days',
                expires_at = now() - interval '1 second' WHERE survey_id = $1",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

// ---- a minimal HTTP/1.1 client (one request per connection) ----

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or_default()
    }
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    // A server may answer (413) before reading a large body and close: that is fine.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    parse_response(&raw).ok_or_else(|| std::io::Error::other("unparsable HTTP response"))
}

fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    Some(HttpResponse {
        status,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).ok()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Option<HttpResponse> {
    request(addr, "GET", path, None, b"").await.ok()
}

pub async fn post_form(addr: SocketAddr, path: &str, fields: &[(&str, &str)]) -> HttpResponse {
    let body = form_encode(fields);
    request(
        addr,
        "POST",
        path,
        Some("application/x-www-form-urlencoded"),
        body.as_bytes(),
    )
    .await
    .unwrap()
}

/// application/x-www-form-urlencoded, as a browser sends it.
pub fn form_encode(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        let mut out = String::new();
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                b => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}
