//! The Grafana dashboard and the Prometheus alert rules in the chart only use metrics a
//! running service exports, so they cannot silently drift from the code.

use std::collections::BTreeSet;
use std::time::Duration;

use clap::Parser;
use jetmart_testkit::{NatsServer, pg};
use tokio_util::sync::CancellationToken;

/// `jetmart_*` names in `text`, without the exposition suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("jetmart_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_owned();
        out.insert(base);
    }
    out
}

#[tokio::test]
async fn dashboards_and_alerts_use_only_exported_metrics() {
    let nats = NatsServer::start().await.unwrap();
    let db = pg::fresh_database().await.unwrap();
    let config = jetmart_order::config::Config::try_parse_from([
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
    let app = jetmart_order::app::build(config).await.unwrap();
    let (grpc, http) = (app.grpc_addr(), app.http_addr());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    jetmart_testkit::http::wait_ready(http, Duration::from_secs(30)).await;
    // One order through the projection, so per-event-type series exist too.
    let mut client = jetmart_proto::order::v1::order_service_client::OrderServiceClient::connect(
        format!("http://{grpc}"),
    )
    .await
    .unwrap();
    let order = client
        .place_order(jetmart_e2e::system::order_request(
            "monitoring",
            &[("SKU-1", 1)],
            "tok_visa",
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    client
        .get_order(jetmart_proto::order::v1::GetOrderRequest {
            order_id: order.order_id,
            min_version: Some(1),
        })
        .await
        .unwrap();
    let (code, exported) = jetmart_testkit::http::get(http, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    let exported = metric_names(&exported);
    assert!(exported.contains("jetmart_outbox_backlog"), "{exported:?}");

    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/helm/jetmart");
    for file in ["files/grafana/jetmart.json", "templates/monitoring.yaml"] {
        let text = std::fs::read_to_string(format!("{chart}/{file}")).unwrap();
        let used = metric_names(&text);
        assert!(!used.is_empty(), "{file} uses no jetmart metric");
        let missing: Vec<_> = used.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics no service exports: {missing:?}"
        );
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
