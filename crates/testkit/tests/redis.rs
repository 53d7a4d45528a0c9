//! Redis: set/get, FLUSHALL, kill and restart on the same port.

use jetmart_testkit::RedisServer;
use redis::AsyncCommands;

#[tokio::test]
async fn set_get_flushall_kill_restart() {
    let redis = RedisServer::start().await.expect("start redis");
    assert!(redis.url().starts_with("redis://127.0.0.1:"));
    assert_ne!(redis.port(), 6379, "never the machine's own server");

    let mut conn = redis.connection().await.unwrap();
    let _: () = conn.set("stock:sku-1", 7).await.unwrap();
    let v: i64 = conn.get("stock:sku-1").await.unwrap();
    assert_eq!(v, 7);

    redis.flushall().await.unwrap();
    let v: Option<i64> = conn.get("stock:sku-1").await.unwrap();
    assert_eq!(v, None, "flushall empties");

    let _: () = conn.set("k", "v").await.unwrap();
    let port = redis.port();
    redis.kill();
    assert_eq!(redis.pid(), None);
    assert!(
        redis.flushall().await.is_err(),
        "flushall on a dead server is an error"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );

    redis.restart().await.unwrap();
    assert_eq!(redis.port(), port);
    let mut conn = redis.connection().await.unwrap();
    let v: Option<String> = conn.get("k").await.unwrap();
    assert_eq!(v, None, "no persistence: a restart starts empty");
    let _: () = conn.set("k", "again").await.unwrap();
    let v: String = conn.get("k").await.unwrap();
    assert_eq!(v, "again");
}
