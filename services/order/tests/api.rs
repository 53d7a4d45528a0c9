//! The order service alone against real NATS and Postgres: the API's contract and its
//! reactions to inventory and payment events published by hand.

use std::time::Duration;

use clap::Parser;
use jetmart_order::app;
use jetmart_order::config::Config;
use jetmart_proto::common::v1::{Money, OrderLine, Shortage};
use jetmart_proto::inventory::v1::StockRejected;
use jetmart_proto::order::v1::order_service_client::OrderServiceClient;
use jetmart_proto::order::v1::{self as pb, CancelReason, OrderStatus};
use jetmart_proto::payment::v1::{PaymentAuthorized, PaymentDeclined};
use jetmart_runtime::OutgoingEvent;
use jetmart_testkit::{NatsServer, TestDatabase, pg, wait_until};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

struct Running {
    client: OrderServiceClient<Channel>,
    addr: std::net::SocketAddr,
    js: async_nats::jetstream::Context,
    db: TestDatabase,
    shutdown: CancellationToken,
    _nats: NatsServer,
}

async fn start() -> Running {
    let nats = NatsServer::start().await.unwrap();
    let db = pg::fresh_database().await.unwrap();
    let config = Config::try_parse_from([
        "jetmart-order",
        "--nats-url",
        &nats.url(),
        "--database-url",
        db.url(),
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ])
    .unwrap();
    let app = app::build(config).await.unwrap();
    let (addr, http) = (app.grpc_addr(), app.http_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    // Ready = streams and consumers provisioned, so events published by the test have a stream.
    jetmart_testkit::http::wait_ready(http, Duration::from_secs(30)).await;
    let client = OrderServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let js = nats.jetstream().await.unwrap();
    Running {
        client,
        addr,
        js,
        db,
        shutdown,
        _nats: nats,
    }
}

fn eur(minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor: minor,
        currency: "EUR".into(),
    })
}

fn request(key: &str) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        idempotency_key: key.into(),
        customer_id: "cust-1".into(),
        customer_email: "ada@example.com".into(),
        lines: vec![
            OrderLine {
                sku: "SKU-1".into(),
                quantity: 2,
                unit_price: eur(1250),
            },
            OrderLine {
                sku: "SKU-2".into(),
                quantity: 1,
                unit_price: eur(999),
            },
        ],
        payment_token: "tok_ok".into(),
        currency: "EUR".into(),
    }
}

impl Running {
    async fn place(&mut self, key: &str) -> pb::Order {
        self.client
            .place_order(request(key))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap()
    }

    async fn get(&mut self, id: &str, min_version: i64) -> pb::Order {
        let req = pb::GetOrderRequest {
            order_id: id.into(),
            min_version: Some(min_version),
        };
        self.client
            .get_order(req)
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap()
    }

    async fn publish<E: jetmart_proto::Event>(&self, source: &str, aggregate: &str, event: &E) {
        let e = OutgoingEvent::new(source, aggregate, event);
        self.js
            .send_publish(
                e.subject.clone(),
                async_nats::jetstream::message::PublishMessage::build()
                    .headers(e.nats_headers())
                    .payload(e.payload.clone()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    async fn events(&self) -> i64 {
        let pool = self.db.pool().await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM order_events")
            .fetch_one(&pool)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn place_then_read_your_write_with_totals_and_history() {
    let mut s = start().await;
    let placed = s.place("k-1").await;
    assert_eq!(placed.status(), OrderStatus::Pending);
    assert_eq!(placed.version, 1);
    assert_eq!(placed.total, eur(2 * 1250 + 999));
    let read = s.get(&placed.order_id, placed.version).await;
    assert_eq!(read.order_id, placed.order_id);
    assert_eq!(read.lines.len(), 2);
    assert_eq!(read.history.len(), 1);
    assert_eq!(read.history[0].status(), OrderStatus::Pending);
    // The event is on the ORDER stream with its CloudEvents headers.
    let stream = s.js.get_stream("ORDER").await.unwrap();
    wait_until("order.placed published", Duration::from_secs(10), || {
        let mut stream = stream.clone();
        async move { stream.info().await.unwrap().state.messages >= 1 }
    })
    .await;
    let msg = stream
        .get_last_raw_message_by_subject(&format!("order.placed.{}", placed.order_id))
        .await
        .unwrap();
    assert_eq!(
        msg.headers.get("ce-type").unwrap().as_str(),
        "jetmart.order.v1.OrderPlaced"
    );
    assert_eq!(msg.headers.get("ce-source").unwrap().as_str(), "order");
    assert_eq!(
        msg.headers.get("Nats-Msg-Id").unwrap().as_str(),
        msg.headers.get("ce-id").unwrap().as_str()
    );
    s.shutdown.cancel();
}

#[tokio::test]
async fn the_same_idempotency_key_gives_one_order_and_a_different_request_is_refused() {
    let mut s = start().await;
    let first = s.place("k-same").await;
    let again = s.place("k-same").await;
    assert_eq!(first.order_id, again.order_id);
    let mut different = request("k-same");
    different.lines[0].quantity = 3;
    let err = s.client.place_order(different).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    // Concurrent retries with one key: still one order.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = s.client.clone();
        tasks.push(tokio::spawn(async move {
            c.place_order(request("k-race"))
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap()
                .order_id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one order for one key");
    assert_eq!(s.events().await, 2, "two orders placed in all");
    s.shutdown.cancel();
}

#[tokio::test]
async fn invalid_requests_name_every_bad_field_and_change_nothing() {
    let mut s = start().await;
    let cases: Vec<(pb::PlaceOrderRequest, &str)> = vec![
        (
            pb::PlaceOrderRequest {
                lines: vec![],
                ..request("k")
            },
            "lines",
        ),
        (
            pb::PlaceOrderRequest {
                lines: vec![OrderLine {
                    sku: "SKU-1".into(),
                    quantity: 0,
                    unit_price: eur(100),
                }],
                ..request("k")
            },
            "lines[0].quantity",
        ),
        (
            pb::PlaceOrderRequest {
                lines: vec![OrderLine {
                    sku: "SKU-1".into(),
                    quantity: 1_000_000,
                    unit_price: eur(100),
                }],
                ..request("k")
            },
            "lines[0].quantity",
        ),
        (
            pb::PlaceOrderRequest {
                currency: "XXX".into(),
                ..request("k")
            },
            "currency",
        ),
        (
            pb::PlaceOrderRequest {
                lines: vec![OrderLine {
                    sku: "SKU-1".into(),
                    quantity: 1,
                    unit_price: Some(Money {
                        amount_minor: 1,
                        currency: "USD".into(),
                    }),
                }],
                ..request("k")
            },
            "lines[0].unit_price.currency",
        ),
        (
            pb::PlaceOrderRequest {
                customer_email: "not-an-email".into(),
                ..request("k")
            },
            "customer_email",
        ),
        (
            pb::PlaceOrderRequest {
                lines: vec![OrderLine {
                    sku: "SKU-1".into(),
                    quantity: 1,
                    unit_price: eur(-5),
                }],
                ..request("k")
            },
            "lines[0].unit_price.amount_minor",
        ),
        (
            pb::PlaceOrderRequest {
                lines: vec![OrderLine {
                    sku: "SKU-1".into(),
                    quantity: 1000,
                    unit_price: eur(i64::MAX / 10),
                }],
                ..request("k")
            },
            "lines[0]",
        ),
        (
            pb::PlaceOrderRequest {
                customer_id: "x".repeat(10_000),
                ..request("k")
            },
            "customer_id",
        ),
        (
            pb::PlaceOrderRequest {
                idempotency_key: String::new(),
                ..request("k")
            },
            "idempotency_key",
        ),
        (
            pb::PlaceOrderRequest {
                lines: (0..200)
                    .map(|i| OrderLine {
                        sku: format!("SKU-{i}"),
                        quantity: 1,
                        unit_price: eur(1),
                    })
                    .collect(),
                ..request("k")
            },
            "lines",
        ),
    ];
    for (req, field) in cases {
        let status = s.client.place_order(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        let bad = status
            .get_details_bad_request()
            .expect("BadRequest details");
        assert!(
            bad.field_violations
                .iter()
                .any(|v| v.field.starts_with(field)),
            "expected a violation on {field}, got {:?}",
            bad.field_violations
        );
    }
    let bad_id = s
        .client
        .get_order(pb::GetOrderRequest {
            order_id: "nope".into(),
            min_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    let unknown = s
        .client
        .get_order(pb::GetOrderRequest {
            order_id: uuid::Uuid::now_v7().to_string(),
            min_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let bad_page = s
        .client
        .list_orders(pb::ListOrdersRequest {
            customer_id: "c".into(),
            page_size: 1000,
            page_token: "zz".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        bad_page
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .len(),
        2
    );
    assert_eq!(s.events().await, 0, "nothing was written");
    s.shutdown.cancel();
}

/// A request body sent as given: what a client that does not use protobuf's types can send.
#[derive(Debug, Default, Clone)]
struct RawMessage(Vec<u8>);

impl prost::Message for RawMessage {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// PlaceOrder with the given body bytes.
async fn place_raw(addr: std::net::SocketAddr, body: Vec<u8>) -> tonic::Status {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/jetmart.order.v1.OrderService/PlaceOrder",
    );
    let codec = tonic_prost::ProstCodec::<RawMessage, pb::PlaceOrderResponse>::default();
    grpc.unary(tonic::Request::new(RawMessage(body)), path, codec)
        .await
        .expect_err("an undecodable request is refused")
}

#[tokio::test]
async fn a_string_that_is_not_utf8_is_invalid_argument_naming_the_field() {
    let s = start().await;
    let mut body = prost::Message::encode_to_vec(&request("utf8"));
    // Same length, so the framing stays valid and only the SKU's bytes are wrong.
    let at = body
        .windows(5)
        .position(|w| w == b"SKU-1")
        .expect("the SKU is in the encoding");
    body[at..at + 5].copy_from_slice(&[0xff, 0xfe, 0xff, 0xfe, 0xff]);
    let status = place_raw(s.addr, body).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad = status
        .get_details_bad_request()
        .expect("BadRequest details");
    assert_eq!(bad.field_violations.len(), 1);
    assert_eq!(bad.field_violations[0].field, "PlaceOrderRequest.lines.sku");
    assert!(
        bad.field_violations[0].description.contains("UTF-8"),
        "{:?}",
        bad.field_violations[0]
    );
    assert!(status.message().contains("PlaceOrderRequest.lines.sku"));
    // Broken framing names no field but is still the client's mistake.
    let status = place_raw(s.addr, vec![0x22, 0x7f, 0x01]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(s.events().await, 0, "nothing was written");
    s.shutdown.cancel();
}

#[tokio::test]
async fn ten_thousand_bad_lines_get_a_small_answer() {
    let mut s = start().await;
    let req = pb::PlaceOrderRequest {
        lines: (0..10_000)
            .map(|_| OrderLine {
                sku: String::new(),
                quantity: 0,
                unit_price: eur(-1),
            })
            .collect(),
        ..request("big")
    };
    let status = s.client.place_order(req).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().len() < 8 * 1024,
        "message is {} bytes",
        status.message().len()
    );
    assert!(
        status.details().len() < 16 * 1024,
        "details are {} bytes",
        status.details().len()
    );
    let bad = status
        .get_details_bad_request()
        .expect("BadRequest details");
    assert!(bad.field_violations.len() <= jetmart_kit::error::MAX_VIOLATIONS);
    assert!(
        bad.field_violations
            .iter()
            .any(|v| v.field == "lines" && v.description.ends_with("lines are allowed, got 10000")),
        "{:?}",
        bad.field_violations
    );
    assert!(status.message().contains("more)"), "{}", status.message());
    assert_eq!(s.events().await, 0, "nothing was written");
    s.shutdown.cancel();
}

#[tokio::test]
async fn a_zero_price_is_refused_up_front() {
    let mut s = start().await;
    let mut req = request("zero");
    req.lines[0].unit_price = eur(0);
    let status = s.client.place_order(req).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad = status
        .get_details_bad_request()
        .expect("BadRequest details");
    assert_eq!(
        bad.field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect::<Vec<_>>(),
        ["lines[0].unit_price.amount_minor"]
    );
    assert_eq!(s.events().await, 0, "nothing was written");
    s.shutdown.cancel();
}

#[tokio::test]
async fn saga_reactions_confirm_or_cancel_and_late_news_does_no_harm() {
    let mut s = start().await;
    // Payment authorized -> CONFIRMED; a duplicate and a late decline change nothing.
    let a = s.place("k-a").await;
    let auth = PaymentAuthorized {
        order_id: a.order_id.clone(),
        payment_id: uuid::Uuid::now_v7().to_string(),
        ..Default::default()
    };
    s.publish("payment", &a.order_id, &auth).await;
    s.publish("payment", &a.order_id, &auth).await;
    let confirmed = s.get(&a.order_id, 2).await;
    assert_eq!(confirmed.status(), OrderStatus::Confirmed);
    assert_eq!(confirmed.payment_id, auth.payment_id);
    s.publish(
        "payment",
        &a.order_id,
        &PaymentDeclined {
            order_id: a.order_id.clone(),
            ..Default::default()
        },
    )
    .await;
    let refused = s
        .client
        .cancel_order(pb::CancelOrderRequest {
            order_id: a.order_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // Out of stock -> CANCELLED with the shortages.
    let b = s.place("k-b").await;
    let shortage = Shortage {
        sku: "SKU-1".into(),
        requested: 2,
        available: 1,
    };
    s.publish(
        "inventory",
        &b.order_id,
        &StockRejected {
            order_id: b.order_id.clone(),
            shortages: vec![shortage.clone()],
            ..Default::default()
        },
    )
    .await;
    let cancelled = s.get(&b.order_id, 2).await;
    assert_eq!(cancelled.status(), OrderStatus::Cancelled);
    assert_eq!(cancelled.cancel_reason(), CancelReason::OutOfStock);
    assert_eq!(cancelled.shortages, vec![shortage]);

    // Customer cancel while PENDING; then a late authorization confirms nothing.
    let c = s.place("k-c").await;
    let by_customer = s
        .client
        .cancel_order(pb::CancelOrderRequest {
            order_id: c.order_id.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(by_customer.status(), OrderStatus::Cancelled);
    assert_eq!(by_customer.cancel_reason(), CancelReason::Customer);
    let again = s
        .client
        .cancel_order(pb::CancelOrderRequest {
            order_id: c.order_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(
        again.version, by_customer.version,
        "cancelling twice is harmless"
    );
    let late = PaymentAuthorized {
        order_id: c.order_id.clone(),
        payment_id: uuid::Uuid::now_v7().to_string(),
        ..Default::default()
    };
    s.publish("payment", &c.order_id, &late).await;
    // Then a marker event on another order: once it is handled, the late one was too (same consumer).
    let d = s.place("k-d").await;
    s.publish(
        "payment",
        &d.order_id,
        &PaymentDeclined {
            order_id: d.order_id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        s.get(&d.order_id, 2).await.cancel_reason(),
        CancelReason::PaymentDeclined
    );
    let c_now = s.get(&c.order_id, 2).await;
    assert_eq!(c_now.status(), OrderStatus::Cancelled);
    assert_eq!(c_now.version, 2, "the late authorization appended nothing");
    s.shutdown.cancel();
}

#[tokio::test]
async fn list_pages_through_a_customers_orders_and_rebuild_keeps_the_read_model() {
    let mut s = start().await;
    let mut placed = Vec::new();
    for i in 0..7 {
        placed.push(s.place(&format!("k-{i}")).await);
    }
    s.get(&placed[6].order_id, 1).await;
    wait_until("projection caught up", Duration::from_secs(10), || {
        let mut c = s.client.clone();
        async move {
            c.list_orders(pb::ListOrdersRequest {
                customer_id: "cust-1".into(),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .orders
            .len()
                == 7
        }
    })
    .await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = s
            .client
            .list_orders(pb::ListOrdersRequest {
                customer_id: "cust-1".into(),
                page_size: 3,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.orders.len() <= 3);
        seen.extend(page.orders.into_iter().map(|o| o.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected: Vec<_> = placed.iter().map(|o| o.order_id.clone()).collect();
    expected.reverse();
    assert_eq!(seen, expected, "newest first, each once");

    let pool = s.db.pool().await.unwrap();
    let rebuilt = jetmart_order::projection::rebuild(&pool).await.unwrap();
    assert_eq!(rebuilt.orders, 7);
    assert_eq!(
        s.get(&placed[3].order_id, 1).await.order_id,
        placed[3].order_id
    );
    // The projection keeps working on the swapped-in table.
    let more = s.place("k-after").await;
    assert_eq!(s.get(&more.order_id, 1).await.order_id, more.order_id);
    s.shutdown.cancel();
}
