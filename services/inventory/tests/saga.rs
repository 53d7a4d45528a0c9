//! The saga side of inventory against real NATS, Postgres and Redis: reserve all or nothing,
//! release on cancel, commit on confirm, tombstones, duplicates and late events.

mod common;

use common::*;
use jetmart_proto::inventory::v1::{
    StockCommitted, StockLow, StockRejected, StockReleased, StockReserved,
};
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserves_every_line_or_none() {
    let env = Env::start().await;
    let app = env.start_app(&[]).await;
    let pool = env.pool().await;
    stock(&pool, "A", 5, 0).await;
    stock(&pool, "B", 3, 1).await;

    // Two lines of A are merged (3 units), B is emptied.
    place(&env.js, "o1", &[("A", 2), ("B", 3), ("A", 1)]).await;
    wait_status(&pool, "o1", "reserved").await;
    assert_eq!(level(&pool, "A").await, Some((2, 3, 0)));
    assert_eq!(level(&pool, "B").await, Some((0, 3, 0)));
    let held: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT sku, quantity, status FROM inventory_reservations WHERE order_id = 'o1' ORDER BY sku")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        held,
        vec![
            ("A".into(), 3, "reserved".into()),
            ("B".into(), 3, "reserved".into())
        ]
    );

    // The reservation event is published and carries total, customer and payment token forward.
    let msg = published(&env.js, &pool, "inventory.reserved.o1").await;
    let reserved = StockReserved::decode(msg.payload).unwrap();
    assert_eq!(reserved.order_id, "o1");
    assert_eq!(reserved.lines.len(), 3);
    assert_eq!(reserved.total.unwrap().amount_minor, 600);
    assert_eq!(reserved.customer_id, "cust-o1");
    assert_eq!(reserved.payment_token, "tok-o1");
    assert!(reserved.reserved_at.is_some());
    assert_eq!(
        msg.headers.get("ce-type").unwrap().as_str(),
        "jetmart.inventory.v1.StockReserved"
    );
    assert_eq!(msg.headers.get("ce-source").unwrap().as_str(), "inventory");
    // B fell below its threshold of 1.
    let low: Vec<StockLow> = outbox(&pool, "inventory.low.B").await;
    assert_eq!(low.len(), 1);
    assert_eq!((low[0].available, low[0].threshold), (0, 1));
    assert!(
        outbox::<StockLow>(&pool, "inventory.low.A")
            .await
            .is_empty()
    );

    // One short line rejects the whole order: A is untouched.
    place(&env.js, "o2", &[("A", 1), ("B", 1)]).await;
    wait_status(&pool, "o2", "rejected").await;
    let rejected: Vec<StockRejected> = outbox(&pool, "inventory.rejected.o2").await;
    assert_eq!(rejected.len(), 1);
    let short: Vec<(String, i64, i64)> = rejected[0]
        .shortages
        .iter()
        .map(|s| (s.sku.clone(), s.requested, s.available))
        .collect();
    assert_eq!(short, vec![("B".into(), 1, 0)]);

    // Every short SKU is listed, unknown ones with 0 available.
    place(&env.js, "o3", &[("Z", 1), ("A", 9), ("B", 2)]).await;
    wait_status(&pool, "o3", "rejected").await;
    let rejected: Vec<StockRejected> = outbox(&pool, "inventory.rejected.o3").await;
    let short: Vec<(String, i64, i64)> = rejected[0]
        .shortages
        .iter()
        .map(|s| (s.sku.clone(), s.requested, s.available))
        .collect();
    assert_eq!(
        short,
        vec![("A".into(), 9, 2), ("B".into(), 2, 0), ("Z".into(), 1, 0)]
    );

    assert_eq!(level(&pool, "A").await, Some((2, 3, 0)));
    assert_eq!(level(&pool, "B").await, Some((0, 3, 0)));
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inventory_reservations WHERE order_id <> 'o1'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inventory_ledger WHERE kind = 'reserve'"
        )
        .await,
        2
    );
    assert_ledger_consistent(&pool).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_releases_and_confirm_commits() {
    let env = Env::start().await;
    let app = env.start_app(&[]).await;
    let pool = env.pool().await;
    stock(&pool, "A", 10, 0).await;
    stock(&pool, "B", 10, 0).await;

    place(&env.js, "keep", &[("A", 2), ("B", 1)]).await;
    place(&env.js, "drop", &[("A", 3)]).await;
    wait_status(&pool, "keep", "reserved").await;
    wait_status(&pool, "drop", "reserved").await;
    assert_eq!(level(&pool, "A").await, Some((5, 5, 0)));

    publish(&env.js, &cancelled_event("drop")).await;
    wait_status(&pool, "drop", "released").await;
    assert_eq!(level(&pool, "A").await, Some((8, 2, 0)));
    let released: Vec<StockReleased> = outbox(&pool, "inventory.released.drop").await;
    assert_eq!(released.len(), 1);
    assert_eq!(
        released[0]
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity))
            .collect::<Vec<_>>(),
        vec![("A", 3)]
    );

    publish(&env.js, &confirmed_event("keep")).await;
    wait_status(&pool, "keep", "committed").await;
    assert_eq!(level(&pool, "A").await, Some((8, 0, 2)));
    assert_eq!(level(&pool, "B").await, Some((9, 0, 1)));
    let committed: Vec<StockCommitted> = outbox(&pool, "inventory.committed.keep").await;
    assert_eq!(committed.len(), 1);
    assert_eq!(
        committed[0]
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity))
            .collect::<Vec<_>>(),
        vec![("A", 2), ("B", 1)]
    );
    let statuses: Vec<(String, String)> = sqlx::query_as(
        "SELECT order_id, status FROM inventory_reservations ORDER BY order_id, sku",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        statuses,
        vec![
            ("drop".into(), "released".into()),
            ("keep".into(), "committed".into()),
            ("keep".into(), "committed".into()),
        ]
    );
    // And both reached JetStream.
    published(&env.js, &pool, "inventory.released.drop").await;
    published(&env.js, &pool, "inventory.committed.keep").await;
    assert_ledger_consistent(&pool).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_before_placed_reserves_nothing() {
    let env = Env::start().await;
    let app = env.start_app(&[]).await;
    let pool = env.pool().await;
    stock(&pool, "A", 4, 0).await;

    publish(&env.js, &cancelled_event("early")).await;
    wait_status(&pool, "early", "cancelled").await;
    place(&env.js, "early", &[("A", 1)]).await;
    wait_drained(&env.js).await;

    assert_eq!(
        order_status(&pool, "early").await.as_deref(),
        Some("cancelled")
    );
    assert_eq!(level(&pool, "A").await, Some((4, 0, 0)));
    assert_eq!(
        count(&pool, "SELECT count(*) FROM inventory_reservations").await,
        0
    );
    assert_eq!(
        outbox_count(&pool, "inventory.%.early").await,
        0,
        "neither reserved, rejected nor released"
    );
    // A confirm that could only be a bug elsewhere does nothing either.
    publish(&env.js, &confirmed_event("early")).await;
    wait_drained(&env.js).await;
    assert_eq!(level(&pool, "A").await, Some((4, 0, 0)));
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inventory_ledger WHERE kind <> 'adjust'"
        )
        .await,
        0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicates_and_late_events_are_harmless() {
    let env = Env::start().await;
    let app = env.start_app(&[]).await;
    let pool = env.pool().await;
    stock(&pool, "A", 10, 0).await;

    // The same order.placed three times: the same event re-sent past JetStream's dedupe (the
    // runtime's processed record stops it) and a distinct event for the same order (the
    // order guard stops it).
    let first = place(&env.js, "o1", &[("A", 4)]).await;
    publish_again(&env.js, &first).await;
    place(&env.js, "o1", &[("A", 4)]).await;
    wait_status(&pool, "o1", "reserved").await;
    wait_drained(&env.js).await;
    assert_eq!(level(&pool, "A").await, Some((6, 4, 0)));

    // Confirm twice (distinct events), then a late cancel and a late placement.
    let confirm = confirmed_event("o1");
    publish(&env.js, &confirm).await;
    publish_again(&env.js, &confirm).await;
    publish(&env.js, &confirmed_event("o1")).await;
    publish(&env.js, &cancelled_event("o1")).await;
    place(&env.js, "o1", &[("A", 4)]).await;
    wait_drained(&env.js).await;

    assert_eq!(
        order_status(&pool, "o1").await.as_deref(),
        Some("committed")
    );
    assert_eq!(level(&pool, "A").await, Some((6, 0, 4)));
    assert_eq!(outbox_count(&pool, "inventory.reserved.o1").await, 1);
    assert_eq!(outbox_count(&pool, "inventory.committed.o1").await, 1);
    assert_eq!(outbox_count(&pool, "inventory.released.o1").await, 0);
    assert_eq!(outbox_count(&pool, "inventory.rejected.o1").await, 0);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inventory_ledger WHERE kind = 'reserve'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inventory_ledger WHERE kind = 'commit'"
        )
        .await,
        1
    );

    // Duplicate cancels of a released order release once.
    place(&env.js, "o2", &[("A", 2)]).await;
    wait_status(&pool, "o2", "reserved").await;
    let cancel = cancelled_event("o2");
    publish(&env.js, &cancel).await;
    publish_again(&env.js, &cancel).await;
    publish(&env.js, &cancelled_event("o2")).await;
    publish(&env.js, &confirmed_event("o2")).await;
    wait_drained(&env.js).await;
    assert_eq!(order_status(&pool, "o2").await.as_deref(), Some("released"));
    assert_eq!(level(&pool, "A").await, Some((6, 0, 4)));
    assert_eq!(outbox_count(&pool, "inventory.released.o2").await, 1);
    assert_eq!(outbox_count(&pool, "inventory.committed.o2").await, 0);
    assert_ledger_consistent(&pool).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_order_is_dead_lettered_and_changes_nothing() {
    let env = Env::start().await;
    let app = env.start_app(&[]).await;
    let pool = env.pool().await;
    stock(&pool, "A", 3, 0).await;

    place(&env.js, "bad", &[("A", 1), ("A", -2)]).await;
    let dead = env.js.get_stream("DEADLETTER").await.unwrap();
    wait_until("dead letter", WAIT, || {
        let dead = dead.clone();
        async move {
            dead.direct_get_last_for_subject("deadletter.inventory.order.placed.bad")
                .await
                .is_ok()
        }
    })
    .await;
    // The runner goes on with the next order.
    place(&env.js, "good", &[("A", 1)]).await;
    wait_status(&pool, "good", "reserved").await;
    assert_eq!(order_status(&pool, "bad").await, None);
    assert_eq!(level(&pool, "A").await, Some((2, 1, 0)));
    app.stop().await;
}
