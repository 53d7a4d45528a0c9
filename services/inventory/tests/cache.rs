//! The Redis availability cache: written after commit, read through on a miss, correct again
//! after FLUSHALL and after a Redis restart, stale entries bounded by the TTL.

mod common;

use std::time::Duration;

use common::*;
use jetmart_inventory::cache::{CacheMetrics, StockCache, key};
use jetmart_inventory::domain::StockLevel;
use jetmart_inventory::store::StockRow;
use jetmart_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use jetmart_proto::inventory::v1::{AdjustStockRequest, GetStockRequest};
use tonic::transport::Channel;

async fn available(client: &mut InventoryServiceClient<Channel>, sku: &str) -> i64 {
    client
        .get_stock(GetStockRequest { sku: sku.into() })
        .await
        .expect("GetStock")
        .into_inner()
        .stock_level
        .unwrap()
        .available
}

async fn wait_cached(env: &Env, sku: &str, want: (i64, i64, i64)) {
    wait_until(&format!("cache of {sku} = {want:?}"), WAIT, || async {
        let mut conn = env.redis_conn().await;
        cached(&mut conn, sku).await.map(|(_, a, r, s)| (a, r, s)) == Some(want)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_is_correct_after_flushall_and_after_a_redis_restart() {
    let env = Env::start().await;
    let app = env.start_app(&[]).await;
    let pool = env.pool().await;
    let mut client = app.client().await;
    stock(&pool, "S", 10, 0).await;

    // A miss reads through and fills the entry.
    assert_eq!(available(&mut client, "S").await, 10);
    wait_cached(&env, "S", (10, 0, 0)).await;

    // A reservation rewrites it after its commit.
    place(&env.js, "o1", &[("S", 3)]).await;
    wait_status(&pool, "o1", "reserved").await;
    wait_cached(&env, "S", (7, 3, 0)).await;
    assert_eq!(available(&mut client, "S").await, 7);

    // FLUSHALL: the next read goes to Postgres and repopulates.
    env.redis.flushall().await.unwrap();
    assert!(cached(&mut env.redis_conn().await, "S").await.is_none());
    assert_eq!(available(&mut client, "S").await, 7);
    wait_cached(&env, "S", (7, 3, 0)).await;

    // Redis away: reads and writes go on from Postgres.
    env.redis.kill();
    assert_eq!(available(&mut client, "S").await, 7);
    publish(&env.js, &confirmed_event("o1")).await;
    wait_status(&pool, "o1", "committed").await;
    let adjusted = client
        .adjust_stock(AdjustStockRequest {
            sku: "S".into(),
            delta: 5,
            reason: "restock".into(),
            idempotency_key: "k-restock".into(),
        })
        .await
        .expect("AdjustStock with Redis down")
        .into_inner()
        .stock_level
        .unwrap();
    assert_eq!(
        (adjusted.available, adjusted.reserved, adjusted.sold),
        (12, 0, 3)
    );
    assert_eq!(available(&mut client, "S").await, 12);

    // Restarted empty: correct at once, and the entry comes back with the current values.
    env.redis.restart().await.unwrap();
    assert_eq!(available(&mut client, "S").await, 12);
    wait_until(
        "GetStock repopulates the cache after the restart",
        WAIT,
        || async {
            let _ = available(&mut client.clone(), "S").await;
            cached(&mut env.redis_conn().await, "S")
                .await
                .map(|(_, a, r, s)| (a, r, s))
                == Some((12, 0, 3))
        },
    )
    .await;
    // Later changes keep it current.
    place(&env.js, "o2", &[("S", 2)]).await;
    wait_status(&pool, "o2", "reserved").await;
    wait_cached(&env, "S", (10, 2, 3)).await;
    assert_eq!(available(&mut client, "S").await, 10);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_entry_is_served_no_longer_than_its_ttl() {
    let env = Env::start().await;
    let app = env.start_app(&["--cache-ttl-secs", "1"]).await;
    let pool = env.pool().await;
    let mut client = app.client().await;
    stock(&pool, "S", 10, 0).await;
    assert_eq!(available(&mut client, "S").await, 10);

    // A wrong entry with a future version (as if a write had been lost and the row moved on),
    // with the TTL every entry carries.
    let mut conn = env.redis_conn().await;
    let _: () = redis::pipe()
        .hset_multiple(
            key("S"),
            &[
                ("v", "1000000"),
                ("a", "999"),
                ("r", "0"),
                ("s", "0"),
                ("t", "0"),
                ("u", "0"),
            ],
        )
        .expire(key("S"), 1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        available(&mut client, "S").await,
        999,
        "served hot from Redis"
    );
    wait_until(
        "the stale entry expires and Postgres answers",
        WAIT,
        || async { available(&mut client.clone(), "S").await == 10 },
    )
    .await;
    wait_cached(&env, "S", (10, 0, 0)).await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(key("S"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_ne!(ttl, -1, "every entry carries a TTL");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioned_writes_never_go_back() {
    let redis = jetmart_testkit::RedisServer::start().await.unwrap();
    let cache = StockCache::connect(
        &redis.url(),
        Duration::from_secs(60),
        CacheMetrics::default(),
    )
    .unwrap();
    let row = |version: i64, available: u64| StockRow {
        sku: "S".into(),
        level: StockLevel {
            available,
            reserved: 0,
            sold: 0,
        },
        low_stock_threshold: 0,
        version,
        updated_at: chrono::Utc::now(),
    };
    assert!(cache.put(&row(5, 50)).await.unwrap());
    // A replica that read an older version writes late: refused.
    assert!(!cache.put(&row(4, 40)).await.unwrap());
    assert_eq!(cache.get("S").await.unwrap().unwrap().level.available, 50);
    assert!(cache.put(&row(6, 60)).await.unwrap());
    assert_eq!(cache.get("S").await.unwrap().unwrap().version, 6);
    assert!(cache.get("T").await.unwrap().is_none());
}
