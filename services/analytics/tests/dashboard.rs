//! The analytics service against real NATS and Redis: known events give exact totals, every
//! event delivered twice counts once, a rebuild reproduces the totals while events keep coming,
//! and the HTTP JSON and event stream say what GetDashboard says.

mod common;

use std::time::Duration;

use common::{
    SCENARIO_EVENTS, WAIT, assert_scenario, content, http_get, publish_scenario, scenario_start,
    start,
};
use jetmart_analytics::rebuild::{self, Progress, RebuildError, RebuildOptions};
use jetmart_proto::analytics::v1::GetDashboardRequest;
use jetmart_testkit::wait_until;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn known_events_give_exact_totals() {
    let s = start().await;
    let empty = s.dashboard().await;
    assert_eq!(empty.revision, 0);
    assert_eq!(empty.orders.unwrap().placed, 0);
    assert_eq!(empty.series.len(), 60, "empty minutes are present");

    let t0 = scenario_start();
    publish_scenario(&s, t0).await;
    s.wait_revision(SCENARIO_EVENTS).await;
    s.wait_drained().await;
    let d = s.dashboard().await;
    assert_scenario(&d, t0);
    assert!(d.as_of.is_some());
    assert_eq!(d.streams.len(), 5);
    for p in &d.streams {
        assert_eq!(p.pending, 0, "{}", p.stream);
        assert!(p.last_sequence > 0, "{}", p.stream);
        assert!(p.last_event_at.is_some(), "{}", p.stream);
    }

    // Sizes: defaults, caps, and refusals that name the field.
    let small = s
        .client
        .clone()
        .get_dashboard(GetDashboardRequest {
            series_minutes: 5,
            top_skus_limit: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .dashboard
        .unwrap();
    assert_eq!(small.series.len(), 5);
    assert_eq!(small.top_skus.len(), 1);
    assert_eq!(small.top_skus[0].sku, "SKU-A");
    let capped = s
        .client
        .clone()
        .get_dashboard(GetDashboardRequest {
            series_minutes: 100_000,
            top_skus_limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .dashboard
        .unwrap();
    assert_eq!(capped.series.len(), 1440);
    let refused = s
        .client
        .clone()
        .get_dashboard(GetDashboardRequest {
            series_minutes: -1,
            top_skus_limit: -5,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let fields: Vec<String> = refused
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, vec!["series_minutes", "top_skus_limit"]);
    s.shutdown.cancel();
    s.task.await.unwrap().unwrap();
}

fn duplicates_counted(metrics: &str) -> i64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("jetmart_events_handled_total{") && l.contains("analytics"))
        .filter(|l| l.to_ascii_lowercase().contains("outcome=\"duplicate\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as i64
}

#[tokio::test]
async fn every_event_delivered_twice_counts_once() {
    let s = start().await;
    let t0 = scenario_start();
    let events = publish_scenario(&s, t0).await;
    for e in &events {
        s.publish_again(e).await;
    }
    // Both copies are in the streams (different Nats-Msg-Id), and both get consumed.
    let mut stored = 0;
    for name in ["ORDER", "INVENTORY", "PAYMENT", "NOTIFICATION", "SURVEY"] {
        stored +=
            s.js.get_stream(name)
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .state
                .messages;
    }
    assert_eq!(stored as i64, 2 * SCENARIO_EVENTS);
    s.wait_drained().await;
    let d = s.dashboard().await;
    assert_scenario(&d, t0);
    wait_until("duplicates counted", WAIT, || async {
        duplicates_counted(&http_get(s.http, "/metrics").await.1) == SCENARIO_EVENTS
    })
    .await;
    s.shutdown.cancel();
}

#[tokio::test]
async fn rebuild_reproduces_the_totals_and_counting_goes_on() {
    let s = start().await;
    let t0 = scenario_start();
    publish_scenario(&s, t0).await;
    s.wait_revision(SCENARIO_EVENTS).await;
    s.wait_drained().await;
    let before = s.dashboard().await;
    let before_gen = api(&s).await["generation"].as_u64().unwrap();

    // Rebuild while new orders keep arriving: none is lost or counted twice across the swap.
    const MORE: i64 = 150;
    let publisher = async {
        common::publish_placed(&s, MORE, t0).await;
    };
    let mut seen = Vec::new();
    let options = RebuildOptions::default();
    let (report, ()) = tokio::join!(
        rebuild::rebuild(&s.js, &s.redis, &options, |p| seen.push(p.clone())),
        publisher
    );
    let report = report.unwrap();
    println!("rebuild under load: {report:?}");
    assert_eq!(report.previous, before_gen);
    assert!(report.generation > before_gen);
    assert!(report.replayed.applied >= SCENARIO_EVENTS as u64);
    assert_eq!(
        report.replayed.applied
            + report.replayed.duplicates
            + report.caught_up.applied
            + report.caught_up.duplicates,
        report.streams.iter().map(|(_, n)| n).sum::<u64>(),
        "every stored message was replayed once: {report:?}"
    );
    assert!(report.deleted_keys > 0);
    assert!(matches!(seen.first(), Some(Progress::Started { .. })));
    assert!(seen.iter().any(|p| matches!(p, Progress::Swapped { .. })));

    s.wait_drained().await;
    let after = s.dashboard().await;
    assert_eq!(after.revision, SCENARIO_EVENTS + MORE);
    assert_eq!(after.orders.as_ref().unwrap().placed, 7 + MORE);
    assert_eq!(
        api(&s).await["generation"].as_u64(),
        Some(report.generation)
    );
    // Without the late orders, the rebuilt model is the one before.
    let mut without = content(&after);
    without.revision -= MORE;
    let o = without.orders.as_mut().unwrap();
    o.placed -= MORE;
    o.pending -= MORE;
    without.funnel.as_mut().unwrap().placed -= MORE;
    let first = without
        .series
        .iter_mut()
        .find(|m| m.start.as_ref().unwrap().seconds == t0.timestamp())
        .unwrap();
    first.placed -= MORE;
    assert_eq!(without, content(&before));

    // Nothing of the old generation is left.
    let mut conn = s.redis.clone();
    let old: Vec<String> = redis::cmd("KEYS")
        .arg(format!("analytics:v1:g{before_gen}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(old.is_empty(), "{old:?}");

    // The live consumers keep counting into the new generation.
    common::publish_placed(&s, 1, t0).await;
    s.wait_revision(SCENARIO_EVENTS + MORE + 1).await;
    assert_eq!(s.dashboard().await.orders.unwrap().placed, 7 + MORE + 1);

    // A second rebuild gives the same again; two at once exclude each other.
    let again = rebuild::rebuild(&s.js, &s.redis, &options, |_| {});
    let racing = async {
        // Take the lock first by hand to see the refusal deterministically.
        let mut conn = s.redis.clone();
        let _: () = redis::cmd("SET")
            .arg("analytics:v1:rebuild-lock")
            .arg("someone-else")
            .arg("EX")
            .arg(60)
            .query_async(&mut conn)
            .await
            .unwrap();
    };
    racing.await;
    assert!(matches!(again.await, Err(RebuildError::Busy)));
    let mut conn = s.redis.clone();
    let _: () = redis::cmd("DEL")
        .arg("analytics:v1:rebuild-lock")
        .query_async(&mut conn)
        .await
        .unwrap();
    let before_second = content(&s.dashboard().await);
    rebuild::rebuild(&s.js, &s.redis, &options, |_| {})
        .await
        .unwrap();
    assert_eq!(content(&s.dashboard().await), before_second);
    s.shutdown.cancel();
}

async fn api(s: &common::Running) -> Value {
    let (status, body) = http_get(s.http, "/api/dashboard").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The JSON's numbers equal GetDashboard's, field by field.
fn assert_json_matches(json: &Value, d: &jetmart_proto::analytics::v1::Dashboard) {
    assert_eq!(json["revision"], d.revision);
    let o = d.orders.as_ref().unwrap();
    for (k, v) in [
        ("placed", o.placed),
        ("confirmed", o.confirmed),
        ("cancelled", o.cancelled),
        ("pending", o.pending),
    ] {
        assert_eq!(json["orders"][k], v, "orders.{k}");
    }
    let reasons: Vec<(i64, i64)> = json["orders"]["cancelled_by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["code"].as_i64().unwrap(), r["count"].as_i64().unwrap()))
        .collect();
    let expected: Vec<(i64, i64)> = o
        .cancelled_by_reason
        .iter()
        .map(|r| (i64::from(r.reason), r.count))
        .collect();
    assert_eq!(reasons, expected);
    let revenue: Vec<(String, i64, i64, i64)> = json["revenue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["currency"].as_str().unwrap().to_owned(),
                r["confirmed_orders"].as_i64().unwrap(),
                r["revenue_minor"].as_i64().unwrap(),
                r["average_order_value_minor"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, i64, i64, i64)> = d
        .revenue
        .iter()
        .map(|r| {
            (
                r.currency.clone(),
                r.confirmed_orders,
                r.revenue.as_ref().unwrap().amount_minor,
                r.average_order_value.as_ref().unwrap().amount_minor,
            )
        })
        .collect();
    assert_eq!(revenue, expected);
    let skus: Vec<(String, i64, i64)> = json["top_skus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["sku"].as_str().unwrap().to_owned(),
                k["units"].as_i64().unwrap(),
                k["orders"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, i64, i64)> = d
        .top_skus
        .iter()
        .map(|k| (k.sku.clone(), k.units, k.orders))
        .collect();
    assert_eq!(skus, expected);
    let low: Vec<(String, i64, i64)> = json["low_stock"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["sku"].as_str().unwrap().to_owned(),
                k["available"].as_i64().unwrap(),
                k["threshold"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, i64, i64)> = d
        .low_stock
        .iter()
        .map(|k| (k.sku.clone(), k.available, k.threshold))
        .collect();
    assert_eq!(low, expected);
    let f = d.funnel.as_ref().unwrap();
    for (k, v) in [
        ("placed", f.placed),
        ("stock_reserved", f.stock_reserved),
        ("stock_rejected", f.stock_rejected),
        ("payment_authorized", f.payment_authorized),
        ("payment_declined", f.payment_declined),
        ("confirmed", f.confirmed),
        ("payment_captured", f.payment_captured),
        ("survey_requested", f.survey_requested),
        ("survey_completed", f.survey_completed),
    ] {
        assert_eq!(json["funnel"][k], v, "funnel.{k}");
    }
    let sv = d.surveys.as_ref().unwrap();
    for (k, v) in [
        ("requested", sv.requested),
        ("completed", sv.completed),
        ("promoters", sv.promoters),
        ("passives", sv.passives),
        ("detractors", sv.detractors),
    ] {
        assert_eq!(json["surveys"][k], v, "surveys.{k}");
    }
    assert_eq!(json["surveys"]["nps"].as_f64(), Some(sv.nps));
    let n = d.notifications.as_ref().unwrap();
    assert_eq!(json["notifications"]["sent"], n.sent);
    assert_eq!(json["notifications"]["failed"], n.failed);
    assert_eq!(
        json["notifications"]["failed_permanent"],
        n.failed_permanent
    );
    let series: Vec<(i64, i64, i64, i64)> = json["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["start"].as_i64().unwrap(),
                m["placed"].as_i64().unwrap(),
                m["confirmed"].as_i64().unwrap(),
                m["cancelled"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(i64, i64, i64, i64)> = d
        .series
        .iter()
        .map(|m| {
            (
                m.start.as_ref().unwrap().seconds,
                m.placed,
                m.confirmed,
                m.cancelled,
            )
        })
        .collect();
    assert_eq!(series, expected);
}

#[tokio::test]
async fn api_json_equals_get_dashboard_and_events_stream_updates() {
    let s = start().await;
    let t0 = scenario_start();
    publish_scenario(&s, t0).await;
    s.wait_revision(SCENARIO_EVENTS).await;
    s.wait_drained().await;
    let d = s.dashboard().await;
    let json = api(&s).await;
    assert_json_matches(&json, &d);
    assert_eq!(json["streams"].as_array().unwrap().len(), 5);
    let ops = &json["ops"];
    assert_eq!(ops["dead_letters"], 0);
    assert_eq!(ops["streams"].as_array().unwrap().len(), 5);
    let analytics_consumers = ops["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["consumer"] == "analytics")
        .count();
    assert_eq!(analytics_consumers, 5, "{ops}");
    assert!(ops["outbox"].as_str().unwrap().contains("/metrics"));
    assert_eq!(
        http_get(s.http, "/api/dashboard?series_minutes=-3").await.0,
        400
    );
    let (status, page) = http_get(s.http, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<h1>jetmart live dashboard</h1>"));
    assert!(!page.contains("__INITIAL_JSON__"));
    let (status, script) = http_get(s.http, "/assets/dashboard.js").await;
    assert_eq!(status, 200);
    assert!(script.contains("EventSource"));

    // The event stream: the current dashboard first, then an update after a new event.
    let mut conn = tokio::net::TcpStream::connect(s.http).await.unwrap();
    conn.write_all(b"GET /events HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(conn).lines();
    let mut next_dashboard = async || -> Value {
        loop {
            let line = tokio::time::timeout(WAIT, lines.next_line())
                .await
                .expect("an event within the wait")
                .unwrap()
                .expect("stream open");
            if let Some(data) = line.strip_prefix("data: ")
                && data.starts_with('{')
            {
                return serde_json::from_str(data).unwrap();
            }
        }
    };
    let first = next_dashboard().await;
    assert_eq!(first["revision"], SCENARIO_EVENTS);
    assert_json_matches(&first, &d);
    common::publish_placed(&s, 1, t0).await;
    let mut update = next_dashboard().await;
    while update["revision"] != SCENARIO_EVENTS + 1 {
        update = next_dashboard().await;
    }
    assert_eq!(update["orders"]["placed"], 8);

    // A poison message: the analytics consumer dead-letters it and the panel counts it.
    s.js.publish("order.placed.poison", "not an event".into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_until("dead letter counted", WAIT, || async {
        api(&s).await["ops"]["dead_letters"] == 1
    })
    .await;
    let json = api(&s).await;
    assert_eq!(
        json["ops"]["dead_letters_by_consumer"][0]["consumer"],
        "analytics"
    );
    assert_eq!(
        json["revision"],
        SCENARIO_EVENTS + 1,
        "the poison counted nothing"
    );

    // Draining ends the open event stream and the service exits cleanly.
    s.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), s.task)
        .await
        .expect("drains with an open event stream")
        .unwrap()
        .unwrap();
}
