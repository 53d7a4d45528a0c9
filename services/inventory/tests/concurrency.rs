//! No oversell across replicas: two inventory instances (two `app::build` + `run`) on one
//! database and one NATS, racing on the same stock.

mod common;

use common::*;
use jetmart_proto::inventory::v1::StockRejected;
use sqlx::PgPool;

/// Waits until both instances have pull requests waiting on the shared durable consumer, so the
/// burst that follows is really split between them.
async fn wait_both_pulling(env: &Env) {
    let stream = env.js.get_stream("ORDER").await.unwrap();
    wait_until("two instances pulling", WAIT, || {
        let stream = stream.clone();
        async move {
            stream
                .consumer_info("inventory")
                .await
                .is_ok_and(|c| c.num_waiting >= 2)
        }
    })
    .await;
}

async fn wait_decided(pool: &PgPool, n: i64) {
    wait_until(&format!("{n} orders decided"), WAIT, || async {
        count(pool, "SELECT count(*) FROM inventory_orders").await == n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn fifty_orders_for_ten_units_across_two_replicas() {
    let env = Env::start().await;
    let a = env.start_app(&[]).await;
    let b = env.start_app(&[]).await;
    let pool = env.pool().await;
    stock(&pool, "HOT", 10, 3).await;
    wait_both_pulling(&env).await;

    let orders: Vec<String> = (0..50).map(|i| format!("hot-{i:02}")).collect();
    futures::future::join_all(orders.iter().map(|id| place(&env.js, id, &[("HOT", 1)]))).await;
    wait_decided(&pool, 50).await;

    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inventory_orders WHERE status = 'reserved'"
        )
        .await,
        10
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inventory_orders WHERE status = 'rejected'"
        )
        .await,
        40
    );
    assert_eq!(level(&pool, "HOT").await, Some((0, 10, 0)));
    assert_eq!(
        count(
            &pool,
            "SELECT coalesce(sum(quantity), 0)::bigint FROM inventory_reservations"
        )
        .await,
        10
    );

    // The ledger: 10 reservations of one unit, available stepping 9, 8, .. 0, never below.
    let afters: Vec<i64> = sqlx::query_scalar(
        "SELECT available_after FROM inventory_ledger WHERE sku = 'HOT' AND kind = 'reserve' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(afters, (0..10).rev().collect::<Vec<i64>>());
    assert_eq!(
        count(&pool, "SELECT min(available_after) FROM inventory_ledger").await,
        0
    );
    assert_ledger_consistent(&pool).await;

    // One event per order; every rejection names HOT with nothing available.
    assert_eq!(outbox_count(&pool, "inventory.reserved.%").await, 10);
    assert_eq!(outbox_count(&pool, "inventory.rejected.%").await, 40);
    for id in &orders {
        for r in outbox::<StockRejected>(&pool, &format!("inventory.rejected.{id}")).await {
            assert_eq!(r.shortages.len(), 1);
            assert_eq!(
                (
                    r.shortages[0].sku.as_str(),
                    r.shortages[0].requested,
                    r.shortages[0].available
                ),
                ("HOT", 1, 0)
            );
        }
    }
    // available crossed below 3 once.
    assert_eq!(outbox_count(&pool, "inventory.low.HOT").await, 1);

    // The saga goes on: the winners are confirmed, the losers cancelled (nothing to release).
    let winners: Vec<String> = sqlx::query_scalar(
        "SELECT order_id FROM inventory_orders WHERE status = 'reserved' ORDER BY order_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for id in &orders {
        let e = if winners.contains(id) {
            confirmed_event(id)
        } else {
            cancelled_event(id)
        };
        publish(&env.js, &e).await;
    }
    wait_drained(&env.js).await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inventory_orders WHERE status = 'committed'"
        )
        .await,
        10
    );
    assert_eq!(level(&pool, "HOT").await, Some((0, 0, 10)));
    assert_ledger_consistent(&pool).await;

    let (applied_a, applied_b) = (a.applied_events().await, b.applied_events().await);
    println!("events applied: instance a {applied_a}, instance b {applied_b}");
    assert_eq!(
        applied_a + applied_b,
        100,
        "every event applied exactly once across the two"
    );
    assert!(applied_a > 0 && applied_b > 0, "both replicas took part");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn crossing_multi_sku_orders_neither_deadlock_nor_oversell() {
    let env = Env::start().await;
    let a = env.start_app(&[]).await;
    let b = env.start_app(&[]).await;
    let pool = env.pool().await;
    stock(&pool, "X", 20, 0).await;
    stock(&pool, "Y", 20, 0).await;
    wait_both_pulling(&env).await;

    // Lines in both orders, so a naive lock order would deadlock two replicas.
    let orders: Vec<String> = (0..60).map(|i| format!("xy-{i:02}")).collect();
    futures::future::join_all(orders.iter().enumerate().map(|(i, id)| {
        let lines: &[(&str, i32)] = if i % 2 == 0 {
            &[("X", 1), ("Y", 1)]
        } else {
            &[("Y", 1), ("X", 1)]
        };
        place(&env.js, id, lines)
    }))
    .await;
    wait_decided(&pool, 60).await;

    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inventory_orders WHERE status = 'reserved'"
        )
        .await,
        20
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inventory_orders WHERE status = 'rejected'"
        )
        .await,
        40
    );
    assert_eq!(level(&pool, "X").await, Some((0, 20, 0)));
    assert_eq!(level(&pool, "Y").await, Some((0, 20, 0)));
    // All or nothing per order: every reserved order holds both SKUs.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM (SELECT order_id FROM inventory_reservations GROUP BY order_id HAVING count(*) <> 2) t"
        )
        .await,
        0
    );
    let mut dead = env.js.get_stream("DEADLETTER").await.unwrap();
    assert_eq!(
        dead.info().await.unwrap().state.messages,
        0,
        "nothing dead-lettered (no deadlock gave up)"
    );
    assert_ledger_consistent(&pool).await;
    a.stop().await;
    b.stop().await;
}

/// Sum of a metric's samples whose line starts with `prefix` (Prometheus text format).
async fn metric_sum(app: &Running, prefix: &str, containing: &str) -> f64 {
    app.http_get("/metrics")
        .await
        .lines()
        .filter(|l| l.starts_with(prefix) && l.to_lowercase().contains(containing))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_backlog_on_hot_skus_is_applied_in_batches_without_deadlocks() {
    let env = Env::start().await;
    let pool = env.pool().await;
    // The first instance creates the schema and the durable consumer, then goes away while the
    // backlog builds up, so the two that follow start with full lanes.
    let first = env.start_app(&[]).await;
    let skus = ["A", "B", "C", "D", "E", "F"];
    for sku in skus {
        stock(&pool, sku, 70, 0).await;
    }
    first.stop().await;
    let n = 240;
    let orders: Vec<(String, Vec<(&str, i32)>)> = (0..n)
        .map(|i| {
            // Three SKUs per order, in rotating order, so batches cross each other's SKUs.
            let lines = (0..3)
                .map(|k| (skus[(i * 5 + k * (1 + i % 4)) % 6], 1))
                .collect::<Vec<_>>();
            (format!("backlog-{i:03}"), lines)
        })
        .collect();
    for (id, lines) in &orders {
        place(&env.js, id, lines).await;
    }
    let a = env.start_app(&[]).await;
    let b = env.start_app(&[]).await;
    wait_decided(&pool, n as i64).await;

    // Stock is exact: what is reserved is what the reservations hold, nothing created or lost.
    for sku in skus {
        let (available, reserved, sold) = level(&pool, sku).await.unwrap();
        assert_eq!(available + reserved + sold, 70, "{sku}");
        let held: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(quantity), 0)::bigint FROM inventory_reservations WHERE sku = $1",
        )
        .bind(sku)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(reserved, held, "{sku}");
    }
    assert_ledger_consistent(&pool).await;
    let reserved = count(
        &pool,
        "SELECT count(*) FROM inventory_orders WHERE status = 'reserved'",
    )
    .await;
    assert!(
        reserved > 0 && reserved < n as i64,
        "some fit, some not: {reserved}"
    );

    // Batches really formed, and none of them deadlocked or retried.
    let mut batches = 0.0;
    let mut batched = 0.0;
    let mut retried = 0.0;
    for app in [&a, &b] {
        batches += metric_sum(app, "jetmart_consumer_batch_size_count{", "inventory").await;
        batched += metric_sum(app, "jetmart_consumer_batch_size_sum{", "inventory").await;
        retried += metric_sum(app, "jetmart_events_handled_total{", "outcome=\"retried\"").await;
    }
    assert!(
        batches > 0.0 && batched / batches > 1.5,
        "{batched} events in {batches} transactions"
    );
    assert_eq!(
        retried, 0.0,
        "no handler retried (no deadlock, no lock timeout)"
    );
    let mut dead = env.js.get_stream("DEADLETTER").await.unwrap();
    assert_eq!(dead.info().await.unwrap().state.messages, 0);
    a.stop().await;
    b.stop().await;
}
