//! Postgres: per-test databases on the shared cluster, and an owned cluster that survives a crash.

use jetmart_testkit::pg::{self, PgCluster};
use sqlx::{Connection, Row};

#[tokio::test]
async fn fresh_databases_are_isolated() {
    let a = pg::fresh_database().await.expect("fresh database a");
    let b = pg::fresh_database().await.expect("fresh database b");
    assert_ne!(a.name(), b.name());
    assert!(a.url().starts_with("postgres://postgres@127.0.0.1:"));
    assert!(
        !a.url().contains(":5432/"),
        "never the machine's own server"
    );

    let pa = a.pool().await.unwrap();
    sqlx::query("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        .execute(&pa)
        .await
        .unwrap();
    sqlx::query("INSERT INTO orders VALUES (1, 'only in a')")
        .execute(&pa)
        .await
        .unwrap();

    let pb = b.pool().await.unwrap();
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('orders')::text")
        .fetch_one(&pb)
        .await
        .unwrap();
    assert_eq!(exists, None, "b must not see a's table");
    sqlx::query("CREATE TABLE orders (id int PRIMARY KEY)")
        .execute(&pb)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pb)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let note: String = sqlx::query_scalar("SELECT note FROM orders WHERE id = 1")
        .fetch_one(&pa)
        .await
        .unwrap();
    assert_eq!(note, "only in a");
}

#[tokio::test]
async fn many_tests_share_one_cluster() {
    let dbs = futures::future::join_all((0..6).map(|_| pg::fresh_database())).await;
    let dbs: Vec<_> = dbs.into_iter().map(|d| d.unwrap()).collect();
    let cluster = pg::shared_cluster().await.unwrap();
    for db in &dbs {
        assert!(
            db.url().starts_with(&cluster.url_for("")),
            "{} on the shared cluster",
            db.url()
        );
        let mut conn = db.connect().await.unwrap();
        let current: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(current, db.name());
        // Commits are acknowledged only once in the WAL.
        let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(sync, "on");
        let max: String = sqlx::query_scalar("SHOW max_connections")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(max, "300");
    }
}

#[tokio::test]
async fn dropping_a_test_database_drops_it() {
    let db = pg::fresh_database().await.unwrap();
    let name = db.name().to_owned();
    let pool = db.pool().await.unwrap(); // left open on purpose: the drop must still work
    sqlx::query("SELECT 1").execute(&pool).await.unwrap();
    drop(db);
    let cluster = pg::shared_cluster().await.unwrap();
    let mut admin = sqlx::PgConnection::connect(&cluster.admin_url())
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(left, 0, "database {name} still exists");
}

#[tokio::test]
async fn crash_and_start_again_keep_committed_rows() {
    let cluster = PgCluster::start().await.expect("start cluster");
    cluster.create_database("chaos").await.unwrap();
    let url = cluster.url_for("chaos");
    let port = cluster.port();

    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE payments (id int PRIMARY KEY)")
        .execute(&mut conn)
        .await
        .unwrap();
    for id in 0..200 {
        sqlx::query("INSERT INTO payments VALUES ($1)")
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    // An open transaction at crash time must vanish.
    let mut open = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut open).await.unwrap();
    sqlx::query("INSERT INTO payments VALUES (999)")
        .execute(&mut open)
        .await
        .unwrap();

    let postmaster = cluster.pid().expect("running");
    cluster.crash();
    assert_eq!(cluster.pid(), None);
    assert!(gone(postmaster), "postmaster {postmaster} still running");
    let err = sqlx::query("SELECT 1").execute(&mut conn).await;
    assert!(err.is_err(), "the old connection died with the server");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );

    cluster.start_again().await.expect("start again");
    assert_eq!(cluster.port(), port);
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let row = sqlx::query("SELECT count(*) AS n, max(id) AS top FROM payments")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>("n"), 200, "every committed row survives");
    assert_eq!(
        row.get::<Option<i32>, _>("top"),
        Some(199),
        "the uncommitted row is gone"
    );

    // And a graceful-ish immediate stop works too.
    cluster.stop();
    assert_eq!(cluster.pid(), None);
    cluster.start_again().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&mut sqlx::PgConnection::connect(&url).await.unwrap())
        .await
        .unwrap();
    assert_eq!(n, 200);

    let data_dir = cluster.data_dir().to_path_buf();
    drop(cluster);
    assert!(!data_dir.exists(), "data dir removed on drop");
}

/// Not running: no /proc entry, or a zombie.
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
}

#[tokio::test]
async fn owned_cluster_gives_fresh_databases_and_rejects_bad_names() {
    let cluster = PgCluster::start().await.unwrap();
    assert!(
        cluster
            .create_database("Robert'); DROP TABLE students;--")
            .await
            .is_err()
    );
    let db = cluster.fresh_database().await.unwrap();
    assert!(db.url().contains(&format!(":{}/", cluster.port())));
    let pool = db.pool().await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
}
