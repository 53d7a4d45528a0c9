//! A read model counts only what the owning service accepted (issue 21): an order.placed the
//! order service would never have published is dead-lettered with its reason and counted
//! nowhere, neither live nor by a rebuild's replay.

mod common;

use common::{SCENARIO_EVENTS, WAIT, assert_scenario, publish_scenario, scenario_start, start};
use futures::StreamExt;
use jetmart_analytics::rebuild::{self, RebuildOptions};
use jetmart_proto::common::v1::{Money, OrderLine};
use jetmart_proto::order::v1::OrderPlaced;
use jetmart_testkit::wait_until;

#[tokio::test]
async fn an_order_placed_the_order_service_refused_is_not_counted() {
    let s = start().await;
    let t0 = scenario_start();
    let zzz = Money {
        amount_minor: 100,
        currency: "ZZZ".into(),
    };
    let poison = OrderPlaced {
        order_id: "not-a-uuid".into(),
        customer_id: "c-poison".into(),
        customer_email: "p@example.test".into(),
        lines: vec![OrderLine {
            sku: "SKU-A".into(),
            quantity: -5,
            unit_price: Some(zzz.clone()),
        }],
        total: Some(zzz),
        ..Default::default()
    };
    let published = s.publish("order", "not-a-uuid", &poison, t0).await;
    publish_scenario(&s, t0).await;
    s.wait_drained().await;
    let d = s.dashboard().await;
    // Exactly the scenario: 7 placed, 1 pending, nothing of the poison.
    assert_scenario(&d, t0);

    // Dead-lettered by analytics, with a reason that names what is wrong.
    wait_until("the poison is dead-lettered", WAIT, || async {
        let mut dead = s.js.get_stream("DEADLETTER").await.unwrap();
        dead.info().await.unwrap().state.messages == 1
    })
    .await;
    let dead = s.js.get_stream("DEADLETTER").await.unwrap();
    let letter = dead
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap()
        .messages()
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap();
    let headers = letter.headers.as_ref().unwrap();
    let error = headers
        .get(jetmart_runtime::deadletter::header::ERROR)
        .unwrap()
        .as_str();
    assert!(
        error.contains("not-a-uuid") && error.contains("order.placed"),
        "{error}"
    );
    assert_eq!(
        headers.get("ce-id").map(|v| v.as_str().to_owned()),
        Some(published.id.to_string())
    );
    assert_eq!(
        headers
            .get(jetmart_runtime::deadletter::header::CONSUMER)
            .unwrap()
            .as_str(),
        "analytics"
    );

    // A rebuild's replay leaves it out as well.
    let report = rebuild::rebuild(&s.js, &s.redis, &RebuildOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(report.replayed.skipped >= 1, "{report:?}");
    assert_eq!(report.replayed.applied, SCENARIO_EVENTS as u64);
    s.wait_drained().await;
    assert_scenario(&s.dashboard().await, t0);
    s.shutdown.cancel();
}
