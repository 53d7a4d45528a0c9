//! InventoryService over real gRPC: GetStock, ListStock, AdjustStock and their status codes,
//! health, and the seed-demo command (library and binary).

mod common;

use std::collections::BTreeSet;

use common::*;
use jetmart_inventory::catalog::DEMO_CATALOG;
use jetmart_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use jetmart_proto::inventory::v1::{
    AdjustStockRequest, GetStockRequest, ListStockRequest, StockAdjusted, StockLow,
};
use sqlx::PgPool;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

fn adjust(sku: &str, delta: i64, reason: &str, key: &str) -> AdjustStockRequest {
    AdjustStockRequest {
        sku: sku.into(),
        delta,
        reason: reason.into(),
        idempotency_key: key.into(),
    }
}

/// Counts of every table an adjustment writes, plus the cache keys.
async fn footprint(env: &Env, pool: &PgPool) -> Vec<i64> {
    let mut conn = env.redis_conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    vec![
        count(pool, "SELECT count(*) FROM inventory_stock").await,
        count(
            pool,
            "SELECT coalesce(sum(available), 0)::bigint FROM inventory_stock",
        )
        .await,
        count(pool, "SELECT count(*) FROM inventory_ledger").await,
        count(pool, "SELECT count(*) FROM inventory_adjustments").await,
        count(pool, "SELECT count(*) FROM jetmart_outbox").await,
        keys.len() as i64,
    ]
}

fn violated_fields(status: &tonic::Status) -> BTreeSet<String> {
    status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adjust_stock_rejects_bad_input_with_field_violations_and_changes_nothing() {
    let env = Env::start().await;
    let app = env.start_app(&[]).await;
    let pool = env.pool().await;
    let mut client = app.client().await;
    client
        .adjust_stock(adjust("S", 10, "restock", "k0"))
        .await
        .unwrap();
    client
        .get_stock(GetStockRequest { sku: "S".into() })
        .await
        .unwrap();
    let before = footprint(&env, &pool).await;

    let cases: Vec<(AdjustStockRequest, &[&str])> = vec![
        (adjust("", 1, "r", "k"), &["sku"]),
        (adjust("bad.sku", 1, "r", "k"), &["sku"]),
        (adjust(&"x".repeat(65), 1, "r", "k"), &["sku"]),
        (adjust("S", 0, "r", "k"), &["delta"]),
        (adjust("S", i64::MIN, "r", "k"), &["delta"]),
        (adjust("S", 1_000_000_001, "r", "k"), &["delta"]),
        (adjust("S", 1, "", "k"), &["reason"]),
        (adjust("S", 1, "   ", "k"), &["reason"]),
        (adjust("S", 1, &"r".repeat(201), "k"), &["reason"]),
        (adjust("S", 1, "r", ""), &["idempotency_key"]),
        (adjust("S", 1, "r", &"k".repeat(129)), &["idempotency_key"]),
        (
            adjust("S S", 0, "", ""),
            &["sku", "delta", "reason", "idempotency_key"],
        ),
    ];
    for (req, fields) in cases {
        let status = client.adjust_stock(req.clone()).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument, "{req:?}: {status:?}");
        let want: BTreeSet<String> = fields.iter().map(|f| f.to_string()).collect();
        assert_eq!(violated_fields(&status), want, "{req:?}");
    }
    // GetStock and ListStock validate too.
    let status = client
        .get_stock(GetStockRequest {
            sku: "no such*".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        BTreeSet::from(["sku".to_string()])
    );
    let status = client
        .list_stock(ListStockRequest {
            page_size: -1,
            page_token: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        BTreeSet::from(["page_size".to_string(), "page_token".to_string()])
    );

    assert_eq!(footprint(&env, &pool).await, before, "nothing changed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adjust_stock_restocks_writes_off_and_is_idempotent() {
    let env = Env::start().await;
    let app = env.start_app(&["--low-stock-threshold", "5"]).await;
    let pool = env.pool().await;
    let mut client = app.client().await;

    // Created on its first restock, with the configured threshold.
    let s = client
        .adjust_stock(adjust("NEW", 10, "delivery 1", "k1"))
        .await
        .unwrap()
        .into_inner()
        .stock_level
        .unwrap();
    assert_eq!(
        (
            s.sku.as_str(),
            s.available,
            s.reserved,
            s.sold,
            s.low_stock_threshold
        ),
        ("NEW", 10, 0, 0, 5)
    );
    let first_version = s.version;

    // The same request again: same answer, nothing applied twice.
    let again = client
        .adjust_stock(adjust("NEW", 10, "delivery 1", "k1"))
        .await
        .unwrap()
        .into_inner()
        .stock_level
        .unwrap();
    assert_eq!((again.available, again.version), (10, first_version));
    assert_eq!(
        count(&pool, "SELECT count(*) FROM inventory_ledger").await,
        1
    );
    // The same key for another request: refused.
    let status = client
        .adjust_stock(adjust("NEW", 11, "delivery 1", "k1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    // Write-off below the threshold: inventory.adjusted and inventory.low.
    let s = client
        .adjust_stock(adjust("NEW", -8, "damaged", "k2"))
        .await
        .unwrap()
        .into_inner()
        .stock_level
        .unwrap();
    assert_eq!(s.available, 2);
    let adjusted: Vec<StockAdjusted> = outbox(&pool, "inventory.adjusted.NEW").await;
    assert_eq!(adjusted.len(), 2);
    assert_eq!(
        (
            adjusted[1].delta,
            adjusted[1].reason.as_str(),
            adjusted[1].available
        ),
        (-8, "damaged", 2)
    );
    assert_ne!(adjusted[0].adjustment_id, adjusted[1].adjustment_id);
    let low: Vec<StockLow> = outbox(&pool, "inventory.low.NEW").await;
    assert_eq!(low.len(), 1);
    assert_eq!((low[0].available, low[0].threshold), (2, 5));
    let msg = published(&env.js, &pool, "inventory.adjusted.NEW").await;
    assert_eq!(
        msg.headers.get("ce-type").unwrap().as_str(),
        "jetmart.inventory.v1.StockAdjusted"
    );

    // More than available: FAILED_PRECONDITION with details, nothing changed; the key stays
    // free for a later try.
    let before = footprint(&env, &pool).await;
    let status = client
        .adjust_stock(adjust("NEW", -3, "lost", "k3"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let details = status
        .get_details_precondition_failure()
        .expect("PreconditionFailure");
    assert_eq!(details.violations[0].subject, "NEW");
    let status = client
        .adjust_stock(adjust("GHOST", -1, "lost", "k4"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(footprint(&env, &pool).await, before);
    assert_eq!(
        level(&pool, "GHOST").await,
        None,
        "a refused write-off creates no SKU"
    );
    client
        .adjust_stock(adjust("NEW", 1, "found one", "k5"))
        .await
        .unwrap();
    let s = client
        .adjust_stock(adjust("NEW", -3, "lost", "k3"))
        .await
        .unwrap()
        .into_inner()
        .stock_level
        .unwrap();
    assert_eq!(s.available, 0);

    // Reads reflect it at once (the cache was rewritten after the commit).
    let got = client
        .get_stock(GetStockRequest { sku: "NEW".into() })
        .await
        .unwrap()
        .into_inner()
        .stock_level
        .unwrap();
    assert_eq!((got.available, got.version), (0, s.version));
    let status = client
        .get_stock(GetStockRequest { sku: "NOPE".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_ledger_consistent(&pool).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_adjustments_of_one_sku_all_apply_once() {
    let env = Env::start().await;
    let app = env.start_app(&[]).await;
    let pool = env.pool().await;
    let client = app.client().await;
    client
        .clone()
        .adjust_stock(adjust("S", 100, "initial", "k-init"))
        .await
        .unwrap();

    // 40 distinct restocks and write-offs plus 10 retries of one key, all at once.
    let calls = (0..50).map(|i| {
        let mut client = client.clone();
        async move {
            let req = match i {
                0..20 => adjust("S", 1, "restock", &format!("k-up-{i}")),
                20..40 => adjust("S", -2, "write-off", &format!("k-down-{i}")),
                _ => adjust("S", 5, "retried", "k-same"),
            };
            client.adjust_stock(req).await.map(|_| ())
        }
    });
    for result in futures::future::join_all(calls).await {
        result.expect("every adjustment succeeds");
    }
    assert_eq!(level(&pool, "S").await, Some((100 + 20 - 40 + 5, 0, 0)));
    assert_eq!(
        count(&pool, "SELECT count(*) FROM inventory_ledger").await,
        42
    );
    assert_ledger_consistent(&pool).await;
    app.stop().await;
}

async fn list_all(
    client: &mut InventoryServiceClient<Channel>,
    page_size: i32,
) -> (Vec<String>, usize) {
    let (mut skus, mut pages, mut token) = (Vec::new(), 0, String::new());
    loop {
        let page = client
            .list_stock(ListStockRequest {
                page_size,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.stock_levels.len() <= page_size as usize);
        skus.extend(page.stock_levels.into_iter().map(|s| s.sku));
        if page.next_page_token.is_empty() {
            return (skus, pages);
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_demo_is_idempotent_and_list_stock_pages_through_it() {
    let env = Env::start().await;
    let app = env.start_app(&[]).await;
    let pool = env.pool().await;
    let mut client = app.client().await;
    let config = env.config(&["seed-demo"]);

    let first = jetmart_inventory::app::seed_demo(&config).await.unwrap();
    assert_eq!(first.len(), DEMO_CATALOG.len());
    assert!(
        first
            .iter()
            .all(|s| s.added == s.item.initial_stock && s.available == s.item.initial_stock)
    );
    let second = jetmart_inventory::app::seed_demo(&config).await.unwrap();
    assert!(
        second
            .iter()
            .all(|s| s.added == 0 && s.available == s.item.initial_stock)
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM inventory_ledger").await,
        DEMO_CATALOG.len() as i64
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inventory_adjustments WHERE idempotency_key LIKE 'seed-demo:%'"
        )
        .await,
        20
    );
    let hot = client
        .get_stock(GetStockRequest {
            sku: "SKU-0018".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .stock_level
        .unwrap();
    assert_eq!((hot.available, hot.low_stock_threshold), (10, 3));

    let want: Vec<String> = DEMO_CATALOG.iter().map(|i| i.sku.to_string()).collect();
    assert_eq!(list_all(&mut client, 7).await, (want.clone(), 3));
    assert_eq!(list_all(&mut client, 20).await, (want.clone(), 1));
    // 0 means the server default (100).
    let page = client
        .list_stock(ListStockRequest {
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.stock_levels.len(), 20);
    assert!(page.next_page_token.is_empty());
    assert_ledger_consistent(&pool).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_reports_the_service_serving() {
    let env = Env::start().await;
    let app = env.start_app(&[]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "jetmart.inventory.v1.InventoryService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    wait_until("/readyz ok", WAIT, || async {
        app.http_get("/readyz")
            .await
            .lines()
            .next()
            .is_some_and(|l| l.contains(" 200 "))
    })
    .await;
    assert!(
        app.http_get("/metrics")
            .await
            .contains("inventory_cache_hits")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_demo_command_prints_what_it_did() {
    let db = jetmart_testkit::pg::fresh_database().await.unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_jetmart-inventory"))
            .arg("seed-demo")
            .env("DATABASE_URL", db.url())
            .env_remove("REDIS_URL")
            .env("LOG_FORMAT", "text")
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // The summary first (the local stack shows that line), then one line per SKU.
    assert_eq!(
        text.lines().next(),
        Some("seed-demo: 20 SKUs, 20 seeded now, 0 already seeded"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains("seeded +")).count(),
        20,
        "{text}"
    );
    assert!(text.contains("SKU-0020"), "{text}");
    let text = String::from_utf8(run().stdout).unwrap();
    assert_eq!(
        text.lines().next(),
        Some("seed-demo: 20 SKUs, 0 seeded now, 20 already seeded"),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("already seeded"))
            .count(),
        21,
        "{text}"
    );

    // A bad setting: one line naming it, exit code 64.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jetmart-inventory"))
        .env("DATABASE_URL", "mysql://nope")
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_string_that_is_not_utf8_is_invalid_argument_naming_the_field() {
    let env = Env::start().await;
    let app = env.start_app(&[]).await;
    let pool = env.pool().await;
    let before = footprint(&env, &pool).await;
    let mut body = prost::Message::encode_to_vec(&adjust("SKU-9", 5, "restock", "k-utf8"));
    let at = body.windows(5).position(|w| w == b"SKU-9").unwrap();
    body[at..at + 5].copy_from_slice(&[0xc3, 0x28, 0xff, 0xfe, 0xff]);

    let channel = Channel::from_shared(format!("http://{}", app.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/jetmart.inventory.v1.InventoryService/AdjustStock",
    );
    let codec = tonic_prost::ProstCodec::<
        RawMessage,
        jetmart_proto::inventory::v1::AdjustStockResponse,
    >::default();
    let status = grpc
        .unary(tonic::Request::new(RawMessage(body)), path, codec)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        violated_fields(&status),
        BTreeSet::from(["AdjustStockRequest.sku".to_string()])
    );
    assert_eq!(footprint(&env, &pool).await, before, "nothing changed");
    app.stop().await;
}

/// grpcurl (as an operator would use it) decodes the BadRequest details through reflection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpcurl_shows_the_field_violations_of_an_error() {
    let grpcurl = jetmart_testkit::tools::tools_dir()
        .expect("scripts/bootstrap.sh installs .tools")
        .join("venv/bin/grpcurl");
    let env = Env::start().await;
    let app = env.start_app(&[]).await;
    let out = tokio::process::Command::new(&grpcurl)
        .args([
            "-plaintext",
            "-d",
            r#"{"sku": "", "delta": 1, "reason": "restock", "idempotency_key": "k"}"#,
            &app.grpc.to_string(),
            "jetmart.inventory.v1.InventoryService/AdjustStock",
        ])
        .output()
        .await
        .expect("grpcurl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Code: InvalidArgument"), "{text}");
    // Without the descriptors grpcurl prints the raw bytes and "... is not recognized".
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(
        compact.contains(r#""@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"sku""#),
        "grpcurl could not decode the details:\n{text}"
    );
    app.stop().await;
}
