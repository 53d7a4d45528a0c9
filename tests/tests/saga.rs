//! The purchase saga across order, inventory and payment (each its own task and database)
//! against real NATS, Postgres and Redis, with the invariant checker at the end of each run.

use std::time::Duration;

use jetmart_e2e::system::{Kind, Options, System, order_request};
use jetmart_proto::order::v1::{CancelOrderRequest, CancelReason, OrderStatus};
use jetmart_proto::payment::v1::PaymentStatus;
use sqlx::Row;

fn assert_clean(report: &jetmart_check::Report) {
    assert!(
        report.ok(),
        "invariants violated: {:#?}\n{}",
        report.violations,
        report.figure_line()
    );
    assert_eq!(report.pending, 0);
}

#[tokio::test]
async fn happy_path_confirms_captures_and_commits_stock() {
    let mut s = System::start(Options::default()).await;
    s.stock("SKU-A", 5).await;
    let o = s
        .place(order_request("happy", &[("SKU-A", 2)], "tok_visa"))
        .await;
    let done = s.settled(&o.order_id).await;
    assert_eq!(done.status(), OrderStatus::Confirmed);
    assert!(!done.payment_id.is_empty());
    s.drain().await;
    let payment = s.payment(&o.order_id).await.unwrap();
    assert_eq!(payment.status(), PaymentStatus::Captured);
    let level = s.level("SKU-A").await;
    assert_eq!((level.available, level.reserved, level.sold), (3, 0, 2));
    let report = s.check().await;
    assert_clean(&report);
    assert_eq!((report.confirmed, report.cancelled), (1, 0));
    s.stop().await;
}

#[tokio::test]
async fn out_of_stock_cancels_with_the_shortages_and_decline_releases_stock() {
    let mut s = System::start(Options::default()).await;
    s.stock("SKU-A", 1).await;
    s.stock("SKU-B", 10).await;
    let short = s
        .place(order_request(
            "short",
            &[("SKU-A", 3), ("SKU-B", 1)],
            "tok_visa",
        ))
        .await;
    let short = s.settled(&short.order_id).await;
    assert_eq!(short.status(), OrderStatus::Cancelled);
    assert_eq!(short.cancel_reason(), CancelReason::OutOfStock);
    assert_eq!(short.shortages.len(), 1);
    assert_eq!(
        (
            short.shortages[0].sku.as_str(),
            short.shortages[0].requested,
            short.shortages[0].available
        ),
        ("SKU-A", 3, 1)
    );

    let declined = s
        .place(order_request("declined", &[("SKU-B", 4)], "tok_decline"))
        .await;
    let declined = s.settled(&declined.order_id).await;
    assert_eq!(declined.status(), OrderStatus::Cancelled);
    assert_eq!(declined.cancel_reason(), CancelReason::PaymentDeclined);
    s.drain().await;
    let b = s.level("SKU-B").await;
    assert_eq!(
        (b.available, b.reserved, b.sold),
        (10, 0, 0),
        "the declined order's stock was released"
    );
    assert_ne!(
        s.payment(&declined.order_id).await.map(|p| p.status()),
        Some(PaymentStatus::Captured)
    );
    let report = s.check().await;
    assert_clean(&report);
    assert_eq!((report.confirmed, report.cancelled), (0, 2));
    s.stop().await;
}

#[tokio::test]
async fn customer_cancels_racing_the_authorization_never_capture_a_cancelled_order() {
    // A slow gateway widens the window between reservation and authorization.
    let options = Options {
        payment_args: vec![
            "--simulated-latency-min-ms".into(),
            "5".into(),
            "--simulated-latency-max-ms".into(),
            "40".into(),
        ],
        ..Default::default()
    };
    let mut s = System::start(options).await;
    s.stock("SKU-A", 1000).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let o = s
            .place(order_request(
                &format!("race-{i}"),
                &[("SKU-A", 1)],
                "tok_visa",
            ))
            .await;
        // Cancel some at once, some a moment later, while the saga is in flight.
        if i % 3 != 0 {
            let _ = s
                .orders
                .cancel_order(CancelOrderRequest {
                    order_id: o.order_id.clone(),
                    reason: "race".into(),
                })
                .await;
        }
        ids.push(o.order_id);
    }
    let mut confirmed = 0;
    for id in &ids {
        let o = s.settled(id).await;
        if o.status() == OrderStatus::Confirmed {
            confirmed += 1;
        }
    }
    s.drain().await;
    for id in &ids {
        let o = s.settled(id).await;
        let p = s.payment(id).await.map(|p| p.status());
        match o.status() {
            OrderStatus::Confirmed => assert_eq!(
                p,
                Some(PaymentStatus::Captured),
                "confirmed {id} has its capture"
            ),
            _ => assert!(
                !matches!(p, Some(PaymentStatus::Captured | PaymentStatus::Authorized)),
                "cancelled {id}: {p:?}"
            ),
        }
    }
    let report = s.check().await;
    assert_clean(&report);
    assert_eq!(report.confirmed, confirmed);
    s.stop().await;
}

#[tokio::test]
async fn a_gateway_without_answer_cancels_the_order_by_the_deadline_and_releases_its_stock() {
    let options = Options {
        payment_args: [
            "--authorize-deadline-ms",
            "2000",
            "--retry-max-attempts",
            "2",
            "--retry-base-delay-ms",
            "20",
            "--retry-max-delay-ms",
            "50",
            "--redelivery-initial-ms",
            "100",
            "--redelivery-max-ms",
            "500",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    };
    let mut s = System::start(options).await;
    s.stock("SKU-A", 5).await;
    let stuck = s
        .place(order_request("stuck", &[("SKU-A", 2)], "tok_transient"))
        .await;
    let stuck = s.settled(&stuck.order_id).await;
    assert_eq!(stuck.status(), OrderStatus::Cancelled);
    assert_eq!(stuck.cancel_reason(), CancelReason::PaymentDeclined);
    assert!(
        stuck.cancel_detail.contains("GATEWAY_UNAVAILABLE"),
        "{}",
        stuck.cancel_detail
    );
    // Another customer is not held back by that card's failures.
    let ok = s
        .place(order_request("ok", &[("SKU-A", 1)], "tok_visa"))
        .await;
    assert_eq!(
        s.settled(&ok.order_id).await.status(),
        OrderStatus::Confirmed
    );
    // An order that got no stock gets no payment row.
    let short = s
        .place(order_request("short", &[("SKU-A", 50)], "tok_visa"))
        .await;
    let short = s.settled(&short.order_id).await;
    assert_eq!(short.cancel_reason(), CancelReason::OutOfStock);
    s.drain().await;
    let level = s.level("SKU-A").await;
    assert_eq!(
        (level.available, level.reserved, level.sold),
        (4, 0, 1),
        "the timed-out order's stock was released"
    );
    let payment = s.payment(&stuck.order_id).await.unwrap();
    assert_eq!(payment.status(), PaymentStatus::Declined);
    assert_eq!(
        payment.decline_reason(),
        jetmart_proto::payment::v1::DeclineReason::GatewayUnavailable
    );
    assert!(s.payment(&short.order_id).await.is_none());
    let report = s.check().await;
    assert_clean(&report);
    assert_eq!((report.confirmed, report.cancelled), (1, 2));
    s.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_orders_for_ten_units_on_two_inventory_replicas() {
    let mut s = System::start(Options {
        inventory_replicas: 2,
        ..Default::default()
    })
    .await;
    s.stock("SKU-HOT", 10).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut c = s.orders.clone();
        tasks.push(tokio::spawn(async move {
            c.place_order(order_request(
                &format!("hot-{i}"),
                &[("SKU-HOT", 1)],
                "tok_visa",
            ))
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
    let mut confirmed = 0;
    for id in &ids {
        if s.settled(id).await.status() == OrderStatus::Confirmed {
            confirmed += 1;
        }
    }
    assert_eq!(confirmed, 10, "exactly the stock was sold");
    s.drain().await;
    let level = s.level("SKU-HOT").await;
    assert_eq!((level.available, level.reserved, level.sold), (0, 0, 10));
    let pool = s.inventory_db.pool().await.unwrap();
    let lowest: i64 = sqlx::query_scalar(
        "SELECT min(available_after) FROM inventory_ledger WHERE sku = 'SKU-HOT'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(lowest >= 0, "never negative");
    let report = s.check().await;
    assert_clean(&report);
    assert_eq!((report.confirmed, report.cancelled), (10, 40));
    s.stop().await;
}

#[tokio::test]
async fn retried_place_order_is_one_order_and_every_service_restarted_mid_flow_still_settles() {
    let mut s = System::start(Options::default()).await;
    s.stock("SKU-A", 1000).await;
    let first = s
        .place(order_request("retry", &[("SKU-A", 1)], "tok_visa"))
        .await;
    let again = s
        .place(order_request("retry", &[("SKU-A", 1)], "tok_visa"))
        .await;
    assert_eq!(first.order_id, again.order_id);

    let mut ids = vec![first.order_id];
    for (round, kind) in [Kind::Inventory, Kind::Payment, Kind::Order]
        .into_iter()
        .enumerate()
    {
        for i in 0..10 {
            let o = s
                .place(order_request(
                    &format!("flow-{round}-{i}"),
                    &[("SKU-A", 1)],
                    "tok_visa",
                ))
                .await;
            ids.push(o.order_id);
        }
        s.restart(kind).await;
    }
    for id in &ids {
        assert_eq!(
            s.settled(id).await.status(),
            OrderStatus::Confirmed,
            "order {id}"
        );
    }
    s.drain().await;
    let report = s.check().await;
    assert_clean(&report);
    assert_eq!(report.orders, 31);
    s.stop().await;
}

#[tokio::test]
async fn the_checker_fails_on_a_corrupted_database() {
    let mut s = System::start(Options::default()).await;
    s.stock("SKU-A", 5).await;
    let o = s
        .place(order_request("corrupt", &[("SKU-A", 1)], "tok_visa"))
        .await;
    s.settled(&o.order_id).await;
    s.drain().await;
    assert_clean(&s.check().await);

    // Stock appears from nowhere.
    let inventory = s.inventory_db.pool().await.unwrap();
    sqlx::query("UPDATE inventory_stock SET available = available + 3 WHERE sku = 'SKU-A'")
        .execute(&inventory)
        .await
        .unwrap();
    let report = s.check().await;
    assert!(!report.ok());
    assert_eq!(report.stock_drift, 3);
    sqlx::query("UPDATE inventory_stock SET available = available - 3 WHERE sku = 'SKU-A'")
        .execute(&inventory)
        .await
        .unwrap();

    // A confirmed order's capture disappears, and an order is left pending.
    let payments = s.payment_db.pool().await.unwrap();
    sqlx::query("UPDATE payments SET status = 'AUTHORIZED'")
        .execute(&payments)
        .await
        .unwrap();
    let orders = s.order_db.pool().await.unwrap();
    let row = sqlx::query("SELECT event FROM order_events WHERE kind = 'placed' LIMIT 1")
        .fetch_one(&orders)
        .await
        .unwrap();
    let mut placed: serde_json::Value = row.get("event");
    let ghost = uuid::Uuid::now_v7();
    placed["order_id"] = serde_json::Value::String(ghost.to_string());
    sqlx::query(
        "INSERT INTO order_events (order_id, version, kind, event) VALUES ($1, 1, 'placed', $2)",
    )
    .bind(ghost)
    .bind(placed)
    .execute(&orders)
    .await
    .unwrap();
    let report = s.check().await;
    assert!(!report.ok());
    assert_eq!(report.pending, 1);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("not one capture")),
        "{:#?}",
        report.violations
    );
    tokio::time::timeout(Duration::from_secs(30), s.stop())
        .await
        .unwrap();
}
