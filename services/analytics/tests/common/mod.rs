//! Shared by the analytics integration tests: a running service on real NATS and Redis, a
//! known set of events with the totals they must produce, and small HTTP helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use jetmart_analytics::app;
use jetmart_analytics::config::Config;
use jetmart_proto::analytics::v1::analytics_service_client::AnalyticsServiceClient;
use jetmart_proto::analytics::v1::{self as pb, GetDashboardRequest};
use jetmart_proto::common::v1::{Money, OrderLine};
use jetmart_proto::inventory::v1::{
    StockAdjusted, StockCommitted, StockLow, StockRejected, StockReserved,
};
use jetmart_proto::notification::v1::{NotificationFailed, NotificationSent};
use jetmart_proto::order::v1::{CancelReason, OrderCancelled, OrderConfirmed, OrderPlaced};
use jetmart_proto::payment::v1::{PaymentAuthorized, PaymentCaptured, PaymentDeclined};
use jetmart_proto::survey::v1::{SurveyCompleted, SurveyRequested};
use jetmart_runtime::OutgoingEvent;
use jetmart_testkit::{NatsServer, RedisServer, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Running {
    pub client: AnalyticsServiceClient<Channel>,
    pub js: async_nats::jetstream::Context,
    pub http: SocketAddr,
    pub redis: redis::aio::ConnectionManager,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), jetmart_kit::ServiceError>>,
    pub redis_server: RedisServer,
    pub nats: NatsServer,
}

pub async fn start() -> Running {
    let nats = NatsServer::start().await.unwrap();
    let redis_server = RedisServer::start().await.unwrap();
    let config = Config::try_parse_from([
        "jetmart-analytics",
        "--nats-url",
        &nats.url(),
        "--redis-url",
        &redis_server.url(),
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ])
    .unwrap();
    config.validate().unwrap();
    let app = app::build(config).await.unwrap();
    let (grpc, http) = (app.grpc_addr(), app.http_addr());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    let client = AnalyticsServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let js = nats.jetstream().await.unwrap();
    let redis = app::connect_redis(&redis_server.url()).unwrap();
    let running = Running {
        client,
        js,
        http,
        redis,
        shutdown,
        task,
        redis_server,
        nats,
    };
    // Consumers exist once the service is ready.
    wait_until("analytics ready", WAIT, || async {
        http_get(http, "/readyz").await.0 == 200
    })
    .await;
    running
}

impl Running {
    pub async fn dashboard(&self) -> pb::Dashboard {
        self.client
            .clone()
            .get_dashboard(GetDashboardRequest::default())
            .await
            .unwrap()
            .into_inner()
            .dashboard
            .unwrap()
    }

    /// Publishes `event` as `source` would (CloudEvents headers, Nats-Msg-Id = ce-id).
    pub async fn publish<E: jetmart_proto::Event>(
        &self,
        source: &str,
        aggregate: &str,
        event: &E,
        time: DateTime<Utc>,
    ) -> OutgoingEvent {
        let e = OutgoingEvent::at(source, aggregate, event, time);
        self.send(&e, e.nats_headers()).await;
        e
    }

    /// The same event again (same ce-id) under a new Nats-Msg-Id, so JetStream stores it twice:
    /// what a redelivery or an upstream double publish looks like to analytics.
    pub async fn publish_again(&self, e: &OutgoingEvent) {
        let mut headers = e.nats_headers();
        headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
        self.send(e, headers).await;
    }

    async fn send(&self, e: &OutgoingEvent, headers: async_nats::HeaderMap) {
        self.js
            .send_publish(
                e.subject.clone(),
                async_nats::jetstream::message::PublishMessage::build()
                    .headers(headers)
                    .payload(e.payload.clone()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Every message of every business stream has been applied by the analytics consumers.
    pub async fn drained(&self) -> bool {
        let d = self.dashboard().await;
        if d.streams.len() != 5 {
            return false;
        }
        for p in &d.streams {
            let mut stream = self.js.get_stream(&p.stream).await.unwrap();
            let last = stream.info().await.unwrap().state.last_sequence;
            if p.pending != 0 || p.last_sequence != last {
                return false;
            }
        }
        true
    }

    pub async fn wait_drained(&self) {
        wait_until("analytics consumers drained", WAIT, || self.drained()).await;
    }

    pub async fn wait_revision(&self, revision: i64) {
        wait_until(&format!("revision {revision}"), WAIT, || async {
            self.dashboard().await.revision >= revision
        })
        .await;
        assert_eq!(self.dashboard().await.revision, revision);
    }
}

fn eur(minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor: minor,
        currency: "EUR".into(),
    })
}

fn line(sku: &str, quantity: i32, unit: Option<Money>) -> OrderLine {
    OrderLine {
        sku: sku.into(),
        quantity,
        unit_price: unit,
    }
}

/// The start of the minute three minutes ago: events of the scenario happen in that minute
/// and the next, well inside the default 60-minute window.
pub fn scenario_start() -> DateTime<Utc> {
    let now = Utc::now().timestamp();
    DateTime::from_timestamp(now - now.rem_euclid(60) - 180, 0).unwrap()
}

/// Events of the known scenario; see [`assert_scenario`] for what they add up to.
pub const SCENARIO_EVENTS: i64 = 40;

/// Publishes the scenario; returns every event published (to publish them again).
pub async fn publish_scenario(s: &Running, t0: DateTime<Utc>) -> Vec<OutgoingEvent> {
    let t1 = t0 + chrono::Duration::seconds(75);
    let t2 = t1 + chrono::Duration::seconds(5);
    let mut out = Vec::new();
    let ids: Vec<String> = (0..7).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let usd = Some(Money {
        amount_minor: 200,
        currency: "USD".into(),
    });
    let lines = |i: usize| match i {
        0 => vec![line("SKU-A", 2, eur(1250)), line("SKU-B", 1, eur(999))],
        1 => vec![line("SKU-A", 1, eur(1250)), line("SKU-A", 3, eur(1250))],
        6 => vec![line("SKU-C", 5, usd.clone())],
        _ => vec![line("SKU-B", 1, eur(999))],
    };
    let total = |i: usize| match i {
        0 => eur(3499),
        1 => eur(5000),
        6 => Some(Money {
            amount_minor: 1000,
            currency: "USD".into(),
        }),
        _ => eur(999),
    };
    // Placed: o1, o2, o3, o7 in the first minute; o4, o5, o6 in the second.
    for (i, id) in ids.iter().enumerate() {
        let at = if [0, 1, 2, 6].contains(&i) { t0 } else { t1 };
        let e = OrderPlaced {
            order_id: id.clone(),
            customer_id: format!("c-{i}"),
            customer_email: "a@example.test".into(),
            lines: lines(i),
            total: total(i),
            ..Default::default()
        };
        out.push(s.publish("order", id, &e, at).await);
    }
    for i in [0, 1, 3, 6] {
        let e = StockReserved {
            order_id: ids[i].clone(),
            lines: lines(i),
            total: total(i),
            ..Default::default()
        };
        out.push(s.publish("inventory", &ids[i], &e, t1).await);
    }
    let rejected = StockRejected {
        order_id: ids[2].clone(),
        ..Default::default()
    };
    out.push(s.publish("inventory", &ids[2], &rejected, t1).await);
    for i in [0, 1, 6] {
        let e = PaymentAuthorized {
            order_id: ids[i].clone(),
            payment_id: format!("p-{i}"),
            amount: total(i),
            ..Default::default()
        };
        out.push(s.publish("payment", &ids[i], &e, t1).await);
    }
    let declined = PaymentDeclined {
        order_id: ids[3].clone(),
        ..Default::default()
    };
    out.push(s.publish("payment", &ids[3], &declined, t1).await);
    for i in [0, 1, 6] {
        let e = OrderConfirmed {
            order_id: ids[i].clone(),
            lines: lines(i),
            total: total(i),
            payment_id: format!("p-{i}"),
            ..Default::default()
        };
        out.push(s.publish("order", &ids[i], &e, t1).await);
    }
    for (i, reason) in [
        (2, CancelReason::OutOfStock),
        (3, CancelReason::PaymentDeclined),
        (4, CancelReason::Customer),
    ] {
        let e = OrderCancelled {
            order_id: ids[i].clone(),
            lines: lines(i),
            total: total(i),
            reason: reason as i32,
            ..Default::default()
        };
        out.push(s.publish("order", &ids[i], &e, t1).await);
    }
    for i in [0, 1] {
        let e = PaymentCaptured {
            order_id: ids[i].clone(),
            payment_id: format!("p-{i}"),
            amount: total(i),
            ..Default::default()
        };
        out.push(s.publish("payment", &ids[i], &e, t2).await);
    }
    let committed = StockCommitted {
        order_id: ids[0].clone(),
        lines: lines(0),
        ..Default::default()
    };
    out.push(s.publish("inventory", &ids[0], &committed, t2).await);
    // Low stock: LOW1 stays low, LOW2 is restocked to its threshold, LOW3 restocked but still low.
    for (sku, available, threshold) in [("SKU-LOW1", 2, 5), ("SKU-LOW2", 1, 3), ("SKU-LOW3", 0, 4)]
    {
        let e = StockLow {
            sku: sku.into(),
            available,
            threshold,
            ..Default::default()
        };
        out.push(s.publish("inventory", sku, &e, t1).await);
    }
    for (sku, available) in [("SKU-LOW2", 3), ("SKU-LOW3", 3)] {
        let e = StockAdjusted {
            sku: sku.into(),
            delta: 2,
            available,
            adjustment_id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        };
        out.push(s.publish("inventory", sku, &e, t2).await);
    }
    for i in [0, 1, 6] {
        let e = SurveyRequested {
            survey_id: format!("s-{i}"),
            order_id: ids[i].clone(),
            ..Default::default()
        };
        out.push(s.publish("survey", &format!("s-{i}"), &e, t2).await);
    }
    for (n, score) in [10, 9, 7, 3].into_iter().enumerate() {
        let e = SurveyCompleted {
            survey_id: format!("s-{n}"),
            score,
            ..Default::default()
        };
        out.push(s.publish("survey", &format!("s-{n}"), &e, t2).await);
    }
    for n in 0..2 {
        let e = NotificationSent {
            notification_id: format!("n-{n}"),
            ..Default::default()
        };
        out.push(s.publish("notification", &format!("n-{n}"), &e, t2).await);
    }
    let failed = NotificationFailed {
        notification_id: "n-x".into(),
        permanent: true,
        ..Default::default()
    };
    out.push(s.publish("notification", "n-x", &failed, t2).await);
    assert_eq!(out.len() as i64, SCENARIO_EVENTS);
    out
}

/// What the scenario adds up to, checked field by field.
pub fn assert_scenario(d: &pb::Dashboard, t0: DateTime<Utc>) {
    assert_eq!(d.revision, SCENARIO_EVENTS);
    let o = d.orders.as_ref().unwrap();
    assert_eq!(
        (o.placed, o.confirmed, o.cancelled, o.pending),
        (7, 3, 3, 1)
    );
    let reasons: Vec<(i32, i64)> = o
        .cancelled_by_reason
        .iter()
        .map(|r| (r.reason, r.count))
        .collect();
    let mut expected = vec![
        (CancelReason::OutOfStock as i32, 1),
        (CancelReason::PaymentDeclined as i32, 1),
        (CancelReason::Customer as i32, 1),
    ];
    expected.sort();
    assert_eq!(reasons, expected);

    let revenue: Vec<(String, i64, i64, i64)> = d
        .revenue
        .iter()
        .map(|r| {
            (
                r.currency.clone(),
                r.confirmed_orders,
                r.revenue.as_ref().unwrap().amount_minor,
                r.average_order_value.as_ref().unwrap().amount_minor,
            )
        })
        .collect();
    assert_eq!(
        revenue,
        vec![("EUR".into(), 2, 8499, 4249), ("USD".into(), 1, 1000, 1000)]
    );
    let skus: Vec<(&str, i64, i64)> = d
        .top_skus
        .iter()
        .map(|k| (k.sku.as_str(), k.units, k.orders))
        .collect();
    assert_eq!(
        skus,
        vec![("SKU-A", 6, 2), ("SKU-C", 5, 1), ("SKU-B", 1, 1)]
    );
    let low: Vec<(&str, i64, i64)> = d
        .low_stock
        .iter()
        .map(|l| (l.sku.as_str(), l.available, l.threshold))
        .collect();
    assert_eq!(low, vec![("SKU-LOW1", 2, 5), ("SKU-LOW3", 3, 4)]);

    let f = d.funnel.as_ref().unwrap();
    assert_eq!(
        (
            f.placed,
            f.stock_reserved,
            f.stock_rejected,
            f.payment_authorized,
            f.payment_declined,
            f.confirmed,
            f.payment_captured,
            f.survey_requested,
            f.survey_completed
        ),
        (7, 4, 1, 3, 1, 3, 2, 3, 4)
    );
    let s = d.surveys.as_ref().unwrap();
    assert_eq!(
        (
            s.requested,
            s.completed,
            s.promoters,
            s.passives,
            s.detractors
        ),
        (3, 4, 2, 1, 1)
    );
    assert_eq!(s.nps, 25.0);
    let n = d.notifications.as_ref().unwrap();
    assert_eq!((n.sent, n.failed, n.failed_permanent), (2, 1, 1));

    // Per minute by event time: 4 placed in t0's minute; the rest in the next.
    assert_eq!(d.series.len(), 60);
    let minute = |secs: i64| {
        d.series
            .iter()
            .find(|m| m.start.as_ref().unwrap().seconds == secs)
            .unwrap_or_else(|| panic!("no bucket for {secs}"))
    };
    let first = minute(t0.timestamp());
    assert_eq!((first.placed, first.confirmed, first.cancelled), (4, 0, 0));
    let second = minute(t0.timestamp() + 60);
    assert_eq!(
        (second.placed, second.confirmed, second.cancelled),
        (3, 3, 3)
    );
    let rev: Vec<(&str, i64)> = second
        .revenue
        .iter()
        .map(|m| (m.currency.as_str(), m.amount_minor))
        .collect();
    assert_eq!(rev, vec![("EUR", 8499), ("USD", 1000)]);
    let sum: i64 = d
        .series
        .iter()
        .map(|m| m.placed + m.confirmed + m.cancelled)
        .sum();
    assert_eq!(sum, 13, "nothing else in the window");
}

/// The dashboard without its moment and stream positions (what a rebuild must reproduce).
pub fn content(d: &pb::Dashboard) -> pb::Dashboard {
    pb::Dashboard {
        as_of: None,
        streams: Vec::new(),
        ..d.clone()
    }
}

/// A tiny HTTP/1.0 GET: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// An order.placed the order service could have published: a UUID order id, one line, a total
/// in a supported currency.
pub fn order_placed() -> (String, OrderPlaced) {
    let id = uuid::Uuid::now_v7().to_string();
    let e = OrderPlaced {
        order_id: id.clone(),
        customer_id: "c-late".into(),
        customer_email: "late@example.test".into(),
        lines: vec![line("SKU-B", 1, eur(999))],
        total: eur(999),
        ..Default::default()
    };
    (id, e)
}

/// Publishes `n` more placed orders at `at`.
pub async fn publish_placed(s: &Running, n: i64, at: DateTime<Utc>) {
    for _ in 0..n {
        let (id, e) = order_placed();
        s.publish("order", &id, &e, at).await;
    }
}

/// `before` (a [`content`]) plus `n` more orders placed in the minute of `at`.
pub fn with_more_placed(before: &pb::Dashboard, n: i64, at: DateTime<Utc>) -> pb::Dashboard {
    let mut d = before.clone();
    d.revision += n;
    let o = d.orders.as_mut().unwrap();
    o.placed += n;
    o.pending += n;
    d.funnel.as_mut().unwrap().placed += n;
    let start = at.timestamp() - at.timestamp().rem_euclid(60);
    d.series
        .iter_mut()
        .find(|m| m.start.as_ref().unwrap().seconds == start)
        .unwrap()
        .placed += n;
    d
}
