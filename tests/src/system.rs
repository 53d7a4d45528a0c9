//! The purchase saga in one test process: order, inventory (any number of replicas) and payment
//! each run as their own task with their own database, against one real NATS, Postgres and
//! Redis. Services can be stopped and started again mid-flow, and the invariant checker runs
//! against their databases at the end.

use std::time::Duration;

use clap::Parser;
use jetmart_proto::common::v1::{Money, OrderLine};
use jetmart_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use jetmart_proto::inventory::v1::{AdjustStockRequest, GetStockRequest, StockLevel};
use jetmart_proto::order::v1::order_service_client::OrderServiceClient;
use jetmart_proto::order::v1::{GetOrderRequest, Order, OrderStatus, PlaceOrderRequest};
use jetmart_proto::payment::v1::payment_service_client::PaymentServiceClient;
use jetmart_proto::payment::v1::{GetPaymentRequest, Payment};
use jetmart_testkit::{NatsServer, RedisServer, TestDatabase, pg, wait_until};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Which service a running task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Order,
    Inventory,
    Payment,
}

struct Running {
    kind: Kind,
    args: Vec<String>,
    grpc: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), jetmart_kit::ServiceError>>,
}

/// Options for [`System::start`].
#[derive(Debug, Clone)]
pub struct Options {
    pub inventory_replicas: usize,
    /// Extra flags for the payment service (e.g. simulated latency).
    pub payment_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            inventory_replicas: 1,
            payment_args: Vec::new(),
        }
    }
}

pub struct System {
    pub nats: NatsServer,
    pub redis: RedisServer,
    pub order_db: TestDatabase,
    pub inventory_db: TestDatabase,
    pub payment_db: TestDatabase,
    running: Vec<Running>,
    pub orders: OrderServiceClient<Channel>,
    pub inventory: InventoryServiceClient<Channel>,
    pub payments: PaymentServiceClient<Channel>,
}

fn common(nats: &str) -> Vec<String> {
    [
        "--nats-url",
        nats,
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--shutdown-deadline-secs",
        "10",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

async fn spawn(kind: Kind, args: Vec<String>) -> Running {
    let argv = std::iter::once("svc".to_owned()).chain(args.iter().cloned());
    let shutdown = CancellationToken::new();
    let (grpc, http, task) = match kind {
        Kind::Order => {
            let app = jetmart_order::app::build(
                jetmart_order::config::Config::try_parse_from(argv).unwrap(),
            )
            .await
            .unwrap();
            (
                app.grpc_addr(),
                app.http_addr(),
                tokio::spawn(app.run(shutdown.clone())),
            )
        }
        Kind::Inventory => {
            let app = jetmart_inventory::app::build(
                jetmart_inventory::config::Config::try_parse_from(argv).unwrap(),
            )
            .await
            .unwrap();
            (
                app.grpc_addr(),
                app.http_addr(),
                tokio::spawn(app.run(shutdown.clone())),
            )
        }
        Kind::Payment => {
            let app = jetmart_payment::app::build(
                jetmart_payment::config::Config::try_parse_from(argv).unwrap(),
            )
            .await
            .unwrap();
            (
                app.grpc_addr(),
                app.http_addr(),
                tokio::spawn(app.run(shutdown.clone())),
            )
        }
    };
    // Ready: streams and consumers provisioned.
    jetmart_testkit::http::wait_ready(http, Duration::from_secs(30)).await;
    Running {
        kind,
        args,
        grpc,
        shutdown,
        task,
    }
}

pub fn money(minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor: minor,
        currency: "USD".into(),
    })
}

/// A PlaceOrder request for `lines` of (sku, quantity) at 10.00 each.
pub fn order_request(key: &str, lines: &[(&str, i32)], token: &str) -> PlaceOrderRequest {
    PlaceOrderRequest {
        idempotency_key: key.into(),
        customer_id: format!("cust-{key}"),
        customer_email: "ada@example.com".into(),
        lines: lines
            .iter()
            .map(|(sku, q)| OrderLine {
                sku: (*sku).into(),
                quantity: *q,
                unit_price: money(1000),
            })
            .collect(),
        payment_token: token.into(),
        currency: "USD".into(),
    }
}

impl System {
    pub async fn start(options: Options) -> System {
        let nats = NatsServer::start().await.unwrap();
        let redis = RedisServer::start().await.unwrap();
        let (order_db, inventory_db, payment_db) = (
            pg::fresh_database().await.unwrap(),
            pg::fresh_database().await.unwrap(),
            pg::fresh_database().await.unwrap(),
        );
        let base = common(&nats.url());
        let mut running = Vec::new();
        let with = |extra: &[&str]| {
            base.iter()
                .cloned()
                .chain(extra.iter().map(|s| (*s).to_owned()))
                .collect::<Vec<_>>()
        };
        running.push(spawn(Kind::Order, with(&["--database-url", order_db.url()])).await);
        for _ in 0..options.inventory_replicas {
            let args = with(&[
                "--database-url",
                inventory_db.url(),
                "--redis-url",
                &redis.url(),
            ]);
            running.push(spawn(Kind::Inventory, args).await);
        }
        let mut payment = with(&["--database-url", payment_db.url()]);
        payment.extend(options.payment_args.iter().cloned());
        running.push(spawn(Kind::Payment, payment).await);
        let addr = |k: Kind| {
            format!(
                "http://{}",
                running.iter().find(|r| r.kind == k).unwrap().grpc
            )
        };
        let orders = OrderServiceClient::connect(addr(Kind::Order))
            .await
            .unwrap();
        let inventory = InventoryServiceClient::connect(addr(Kind::Inventory))
            .await
            .unwrap();
        let payments = PaymentServiceClient::connect(addr(Kind::Payment))
            .await
            .unwrap();
        System {
            nats,
            redis,
            order_db,
            inventory_db,
            payment_db,
            running,
            orders,
            inventory,
            payments,
        }
    }

    /// Sets a SKU's available stock by an adjustment (restock).
    pub async fn stock(&mut self, sku: &str, quantity: i64) {
        self.inventory
            .adjust_stock(AdjustStockRequest {
                sku: sku.into(),
                delta: quantity,
                reason: "test stock".into(),
                idempotency_key: format!("stock-{sku}-{quantity}-{}", uuid::Uuid::now_v7()),
            })
            .await
            .unwrap();
    }

    pub async fn level(&mut self, sku: &str) -> StockLevel {
        self.inventory
            .get_stock(GetStockRequest { sku: sku.into() })
            .await
            .unwrap()
            .into_inner()
            .stock_level
            .unwrap()
    }

    pub async fn place(&mut self, req: PlaceOrderRequest) -> Order {
        self.orders
            .place_order(req)
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap()
    }

    /// Waits until the order is CONFIRMED or CANCELLED and returns it.
    pub async fn settled(&mut self, order_id: &str) -> Order {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let req = GetOrderRequest {
                order_id: order_id.into(),
                min_version: None,
            };
            if let Ok(r) = self.orders.get_order(req).await {
                let o = r.into_inner().order.unwrap();
                if matches!(o.status(), OrderStatus::Confirmed | OrderStatus::Cancelled) {
                    return o;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {order_id} did not settle"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The order's payment, if the payment service knows it.
    pub async fn payment(&mut self, order_id: &str) -> Option<Payment> {
        self.payments
            .get_payment(GetPaymentRequest {
                order_id: order_id.into(),
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().payment)
    }

    /// Stops one running instance of `kind` (drains), then starts it again on a new port.
    pub async fn restart(&mut self, kind: Kind) {
        let i = self.running.iter().position(|r| r.kind == kind).unwrap();
        let old = self.running.remove(i);
        old.shutdown.cancel();
        old.task.await.unwrap().unwrap();
        let new = spawn(kind, old.args).await;
        let url = format!("http://{}", new.grpc);
        match kind {
            Kind::Order => self.orders = OrderServiceClient::connect(url).await.unwrap(),
            Kind::Inventory => self.inventory = InventoryServiceClient::connect(url).await.unwrap(),
            Kind::Payment => self.payments = PaymentServiceClient::connect(url).await.unwrap(),
        }
        self.running.push(new);
    }

    /// Waits until every consumer has nothing pending or unacknowledged and every outbox is
    /// empty: the system is drained.
    pub async fn drain(&self) {
        let js = self.nats.jetstream().await.unwrap();
        let dbs = [
            self.order_db.pool().await.unwrap(),
            self.inventory_db.pool().await.unwrap(),
            self.payment_db.pool().await.unwrap(),
        ];
        wait_until("system drained", Duration::from_secs(60), || {
            let js = js.clone();
            let dbs = dbs.clone();
            async move {
                for db in &dbs {
                    let left: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM jetmart_outbox WHERE published_at IS NULL",
                    )
                    .fetch_one(db)
                    .await
                    .unwrap();
                    if left > 0 {
                        return false;
                    }
                }
                for stream in ["ORDER", "INVENTORY", "PAYMENT"] {
                    let Ok(s) = js.get_stream(stream).await else {
                        return false;
                    };
                    let mut names = s.consumer_names();
                    while let Some(Ok(name)) = futures::StreamExt::next(&mut names).await {
                        let mut c: async_nats::jetstream::consumer::PullConsumer =
                            s.get_consumer(&name).await.unwrap();
                        let info = c.info().await.unwrap();
                        if info.num_pending > 0 || info.num_ack_pending > 0 {
                            return false;
                        }
                    }
                }
                true
            }
        })
        .await;
    }

    /// Runs the invariant checker against this system.
    pub async fn check(&self) -> jetmart_check::Report {
        let sources = jetmart_check::Sources {
            order_db: self.order_db.url().into(),
            inventory_db: self.inventory_db.url().into(),
            payment_db: self.payment_db.url().into(),
            nats_url: self.nats.url(),
            ..Default::default()
        };
        jetmart_check::check(&sources).await.unwrap()
    }

    pub async fn stop(self) {
        for r in self.running {
            r.shutdown.cancel();
            r.task.await.unwrap().unwrap();
        }
    }
}
