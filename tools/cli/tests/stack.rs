//! `jetmartctl smoke`, `demo-orders`, `rebuild` and `streams` against a real order + inventory +
//! payment stack (each service in this process with its own database, one NATS, one Redis),
//! and smoke's failure path when a service is not there.

mod common;

use std::time::{Duration, Instant};

use clap::Parser;
use common::{ctl, ctl_at};
use jetmart_testkit::{NatsServer, RedisServer, TestDatabase, pg};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

type Task = JoinHandle<Result<(), jetmart_kit::ServiceError>>;

fn args(nats: &str, extra: &[&str]) -> Vec<String> {
    [
        "svc",
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
    .chain(extra)
    .map(|s| (*s).to_owned())
    .collect()
}

struct Stack {
    nats: NatsServer,
    redis: RedisServer,
    order_db: TestDatabase,
    _inventory_db: TestDatabase,
    _payment_db: TestDatabase,
    /// gRPC endpoints: order, inventory, payment.
    grpc: Vec<String>,
    tasks: Vec<Task>,
    shutdown: CancellationToken,
}

impl Stack {
    async fn start() -> Stack {
        let nats = NatsServer::start().await.unwrap();
        let redis = RedisServer::start().await.unwrap();
        let (order_db, inventory_db, payment_db) = (
            pg::fresh_database().await.unwrap(),
            pg::fresh_database().await.unwrap(),
            pg::fresh_database().await.unwrap(),
        );
        let url = nats.url();
        let redis_url = redis.url();
        // The demo catalog, as `jetmart-inventory seed-demo` does on a real install.
        let seed = jetmart_inventory::config::Config::try_parse_from(args(
            &url,
            &[
                "--database-url",
                inventory_db.url(),
                "--redis-url",
                &redis_url,
                "seed-demo",
            ],
        ))
        .unwrap();
        jetmart_inventory::app::seed_demo(&seed).await.unwrap();

        let shutdown = CancellationToken::new();
        let mut grpc = Vec::new();
        let mut tasks = Vec::new();
        let mut ready = Vec::new();

        let order = jetmart_order::app::build(
            jetmart_order::config::Config::try_parse_from(args(
                &url,
                &["--database-url", order_db.url()],
            ))
            .unwrap(),
        )
        .await
        .unwrap();
        grpc.push(format!("http://{}", order.grpc_addr()));
        ready.push(order.http_addr());
        tasks.push(tokio::spawn(order.run(shutdown.clone())));

        let inventory = jetmart_inventory::app::build(
            jetmart_inventory::config::Config::try_parse_from(args(
                &url,
                &[
                    "--database-url",
                    inventory_db.url(),
                    "--redis-url",
                    &redis_url,
                ],
            ))
            .unwrap(),
        )
        .await
        .unwrap();
        grpc.push(format!("http://{}", inventory.grpc_addr()));
        ready.push(inventory.http_addr());
        tasks.push(tokio::spawn(inventory.run(shutdown.clone())));

        let payment = jetmart_payment::app::build(
            jetmart_payment::config::Config::try_parse_from(args(
                &url,
                &["--database-url", payment_db.url()],
            ))
            .unwrap(),
        )
        .await
        .unwrap();
        grpc.push(format!("http://{}", payment.grpc_addr()));
        ready.push(payment.http_addr());
        tasks.push(tokio::spawn(payment.run(shutdown.clone())));

        for addr in ready {
            jetmart_testkit::http::wait_ready(addr, Duration::from_secs(30)).await;
        }
        Stack {
            nats,
            redis,
            order_db,
            _inventory_db: inventory_db,
            _payment_db: payment_db,
            grpc,
            tasks,
            shutdown,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            t.await.unwrap().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smoke_demo_orders_rebuilds_and_streams_against_a_real_stack() {
    let stack = Stack::start().await;
    let nats = stack.nats.url();
    let order_url = stack.grpc[0].clone();

    let mut smoke = vec!["smoke", "--order-url", order_url.as_str()];
    for url in &stack.grpc {
        smoke.extend(["--health-url", url.as_str()]);
    }
    smoke.extend(["--timeout", "60s"]);
    let run = ctl(&smoke).await.expect(0);
    for url in &stack.grpc {
        assert!(
            run.stdout.contains(&format!("health {url}: SERVING")),
            "{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("placed order"), "{}", run.stdout);
    assert!(run.stdout.contains("CONFIRMED"), "{}", run.stdout);
    assert!(run.stdout.contains("PASS"), "{}", run.stdout);

    let demo = ctl(&[
        "demo-orders",
        "--order-url",
        &order_url,
        "--count",
        "6",
        "--seed",
        "11",
        "--decline-share",
        "0.5",
        "--out-of-stock-share",
        "0",
        "--wait",
    ])
    .await
    .expect(0);
    assert!(
        demo.stdout.contains("placed 6 of 6 demo orders"),
        "{}",
        demo.stdout
    );
    assert!(demo.stdout.contains("seed 11"), "{}", demo.stdout);
    // Every order settled, and the outcomes add up to six.
    let outcomes = demo
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("outcomes: "))
        .unwrap_or_else(|| panic!("{}", demo.stdout));
    assert!(!outcomes.contains("pending"), "{outcomes}");
    let settled: usize = outcomes
        .split(", ")
        .map(|part| part.rsplit(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(settled, 6, "{outcomes}");
    assert!(
        outcomes.contains("cancelled (payment declined)"),
        "{outcomes}"
    );

    let rebuild = ctl(&["rebuild", "order", "--database-url", stack.order_db.url()])
        .await
        .expect(0);
    assert!(
        rebuild
            .stdout
            .contains("order read model rebuilt: 7 orders"),
        "{}",
        rebuild.stdout
    );

    let analytics = ctl_at(
        &nats,
        &["rebuild", "analytics", "--redis-url", &stack.redis.url()],
    )
    .await
    .expect(0);
    assert!(
        analytics
            .stdout
            .contains("analytics read model rebuilt: generation"),
        "{}",
        analytics.stdout
    );
    let replayed: u64 = analytics
        .stdout
        .split('(')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", analytics.stdout));
    assert!(
        replayed >= 7 * 2,
        "at least placed and a verdict per order: {replayed}"
    );

    let streams = ctl_at(&nats, &["streams"]).await.expect(0);
    for needle in [
        "ORDER  messages",
        "INVENTORY  messages",
        "PAYMENT  messages",
        "per service",
    ] {
        assert!(
            streams.stdout.contains(needle),
            "{needle}: {}",
            streams.stdout
        );
    }
    for service in ["order", "inventory", "payment"] {
        assert!(
            streams
                .stdout
                .lines()
                .skip_while(|l| !l.starts_with("per service"))
                .any(|l| l.starts_with(&format!("{service} "))),
            "{service}: {}",
            streams.stdout
        );
    }

    stack.stop().await;
}

#[tokio::test]
async fn smoke_fails_with_the_reason_when_a_service_is_down() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let run = ctl(&[
        "smoke",
        "--order-url",
        &down,
        "--health-url",
        &down,
        "--timeout",
        "2s",
    ])
    .await
    .expect(1);
    assert!(
        run.stderr
            .contains(&format!("health {down} is not SERVING")),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!run.stdout.contains("PASS"), "{}", run.stdout);
}
