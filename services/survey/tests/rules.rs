//! The survey rules against real NATS and Postgres: order.confirmed published with proper
//! envelopes, decisions read back from the service's record and the SURVEY stream.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use jetmart_survey::domain::SamplingRate;
use support::*;
use uuid::Uuid;

fn invited(decisions: &BTreeMap<Uuid, String>) -> BTreeSet<Uuid> {
    decisions
        .iter()
        .filter(|(_, d)| *d == "invited")
        .map(|(id, _)| *id)
        .collect()
}

async fn requested_orders(infra: &Infra, expected: usize) -> BTreeSet<Uuid> {
    let js = &infra.js;
    wait_until_requested(js, expected).await;
    requested(js)
        .await
        .iter()
        .map(|(_, e)| Uuid::parse_str(&e.order_id).unwrap())
        .collect()
}

async fn wait_until_requested(js: &async_nats::jetstream::Context, n: usize) {
    wait_until("survey.requested published", WAIT, || async move {
        requested(js).await.len() >= n
    })
    .await;
}

#[tokio::test]
async fn the_minimum_order_value_is_per_currency() {
    let s = start(&[
        "--min-order",
        "EUR:1000,USD:5000",
        "--first-order-only",
        "false",
        "--cooldown",
        "0",
    ])
    .await;
    let orders = [
        Order::new("c-eur-low", "EUR", 999, day(0)),
        Order::new("c-eur-ok", "EUR", 1_000, day(0)),
        Order::new("c-usd-low", "USD", 4_999, day(0)),
        Order::new("c-usd-ok", "USD", 5_000, day(0)),
        Order::new("c-gbp", "GBP", 1_000_000, day(0)),
    ];
    let sent = publish_orders(&s.infra.js, &orders).await;
    let d = settle(&s.infra, &orders).await;
    let got: Vec<&str> = orders.iter().map(|o| d[&o.id].as_str()).collect();
    assert_eq!(
        got,
        [
            "below_minimum",
            "invited",
            "below_minimum",
            "invited",
            "currency_not_configured"
        ]
    );

    // Exactly the invited orders are on the SURVEY stream, with their envelope and link.
    let published = requested(&s.infra.js).await;
    let ids: BTreeSet<Uuid> = published
        .iter()
        .map(|(_, e)| Uuid::parse_str(&e.order_id).unwrap())
        .collect();
    assert_eq!(ids, invited(&d));
    assert_eq!(published.len(), 2);
    for (msg, e) in &published {
        let i = orders
            .iter()
            .position(|o| o.id.to_string() == e.order_id)
            .unwrap();
        assert_eq!(msg.subject, format!("survey.requested.{}", e.survey_id));
        assert_eq!(msg.header("ce-source"), "survey");
        assert_eq!(msg.header("ce-subject"), e.survey_id);
        assert_eq!(msg.header("Nats-Msg-Id"), msg.header("ce-id"));
        assert_eq!(
            msg.header("jetmart-causation-id"),
            sent[i].id.to_string(),
            "caused by the order.confirmed"
        );
        assert_eq!(e.customer_id, orders[i].customer);
        assert_eq!(
            e.customer_email,
            format!("{}@example.com", orders[i].customer)
        );
        assert_eq!(e.token.len(), 64);
        assert_eq!(e.link, format!("{PUBLIC_URL}/s/{}", e.token));
        let (requested_at, expires_at) = (
            e.requested_at.unwrap().seconds,
            e.expires_at.unwrap().seconds,
        );
        assert_eq!(
            expires_at - requested_at,
            14 * 86_400,
            "default SURVEY_TOKEN_TTL"
        );
    }
}

#[tokio::test]
async fn only_the_first_confirmed_order_of_a_customer_when_the_toggle_is_on() {
    let on = start(&["--cooldown", "0"]).await;
    let orders = [
        Order::new("ada", "EUR", 2_000, day(0)),
        Order::new("ada", "EUR", 2_000, day(1)),
        Order::new("bob", "EUR", 500, day(0)),
        // Bob's first order was below the minimum: his second is still not his first.
        Order::new("bob", "EUR", 2_000, day(2)),
        Order::new("cy", "EUR", 2_000, day(3)),
    ];
    publish_orders(&on.infra.js, &orders).await;
    let d = settle(&on.infra, &orders).await;
    let got: Vec<&str> = orders.iter().map(|o| d[&o.id].as_str()).collect();
    assert_eq!(
        got,
        [
            "invited",
            "not_first_order",
            "below_minimum",
            "not_first_order",
            "invited"
        ]
    );
    assert_eq!(requested_orders(&on.infra, 2).await, invited(&d));

    let off = start(&["--first-order-only", "false", "--cooldown", "0"]).await;
    publish_orders(&off.infra.js, &orders).await;
    let d = settle(&off.infra, &orders).await;
    let got: Vec<&str> = orders.iter().map(|o| d[&o.id].as_str()).collect();
    assert_eq!(
        got,
        ["invited", "invited", "below_minimum", "invited", "invited"]
    );
    assert_eq!(requested_orders(&off.infra, 4).await, invited(&d));
}

#[tokio::test]
async fn at_most_one_invitation_per_customer_per_cooldown_period() {
    let s = start(&["--first-order-only", "false", "--cooldown", "30d"]).await;
    let orders = [
        Order::new("ada", "EUR", 2_000, day(0)),
        Order::new("ada", "EUR", 2_000, day(10)),
        Order::new("bob", "EUR", 2_000, day(1)),
        Order::new("ada", "EUR", 2_000, day(29)),
        // Exactly one period after the invited order: allowed again.
        Order::new("ada", "EUR", 2_000, day(30)),
        Order::new("ada", "EUR", 2_000, day(45)),
        // Below the minimum: no invitation, so it does not restart the period.
        Order::new("bob", "EUR", 10, day(20)),
        Order::new("bob", "EUR", 2_000, day(31)),
    ];
    publish_orders(&s.infra.js, &orders).await;
    let d = settle(&s.infra, &orders).await;
    let got: Vec<&str> = orders.iter().map(|o| d[&o.id].as_str()).collect();
    assert_eq!(
        got,
        [
            "invited",
            "recently_invited",
            "invited",
            "recently_invited",
            "invited",
            "recently_invited",
            "below_minimum",
            "invited"
        ]
    );
    assert_eq!(requested_orders(&s.infra, 4).await, invited(&d));
}

/// Orders with fixed ids, so the sample is the same every run.
fn sampled_orders() -> Vec<Order> {
    let mut orders = Vec::new();
    for i in 0..48u128 {
        let customer = format!("cust-{}", i % 30);
        let mut o = Order::new(
            &customer,
            if i % 7 == 0 { "USD" } else { "EUR" },
            if i % 11 == 0 { 400 } else { 1_500 + i as i64 },
            day(i as i64),
        );
        o.id = Uuid::from_u128(0x0197_0000_0000_7000_8000_0000_0000_0000 + i * 7_919);
        orders.push(o);
    }
    orders
}

#[tokio::test]
async fn sampling_is_by_order_id_and_a_replay_into_a_fresh_database_decides_the_same() {
    let args = ["--sample-rate", "0.5", "--cooldown", "7d"];
    let orders = sampled_orders();
    let rate = SamplingRate::from_fraction(0.5).unwrap();

    let first = start(&args).await;
    publish_orders(&first.infra.js, &orders).await;
    let d1 = settle(&first.infra, &orders).await;

    // Expected from the rules alone: a customer's first order, at least the minimum, sampled.
    let mut seen = BTreeSet::new();
    for o in &orders {
        let first_of_customer = seen.insert(o.customer.clone());
        let expected = if o.total < 1_000 {
            "below_minimum"
        } else if !first_of_customer {
            "not_first_order"
        } else if !rate.includes(o.id) {
            "not_sampled"
        } else {
            "invited"
        };
        assert_eq!(d1[&o.id], expected, "order {}", o.id);
    }
    let counts = |d: &BTreeMap<Uuid, String>, what: &str| d.values().filter(|v| *v == what).count();
    assert!(counts(&d1, "invited") >= 3, "{d1:?}");
    assert!(counts(&d1, "not_sampled") >= 3, "{d1:?}");
    let invited_first = invited(&d1);
    assert_eq!(
        requested_orders(&first.infra, invited_first.len()).await,
        invited_first
    );

    // Redelivery: the very same message again (deduplicated) and the same order under a new
    // event id (re-published) change nothing. A marker order behind them in the stream shows
    // they were handled (order.confirmed is handled in stream order).
    let again = orders[1].envelope();
    publish(&first.infra.js, &again).await;
    publish(&first.infra.js, &again).await;
    publish_orders(&first.infra.js, &orders[..5]).await;
    let mut marker = Order::new("marker", "EUR", 5_000, day(100));
    marker.id = (0..)
        .map(|i| Uuid::from_u128(0xfeed_0000 + i))
        .find(|id| rate.includes(*id))
        .unwrap();
    publish_orders(&first.infra.js, std::slice::from_ref(&marker)).await;
    let after = settle(&first.infra, std::slice::from_ref(&marker)).await;
    assert_eq!(after[&marker.id], "invited");
    let mut expected = d1.clone();
    expected.insert(marker.id, "invited".into());
    assert_eq!(after, expected, "redeliveries decided nothing new");
    let mut with_marker = invited_first.clone();
    with_marker.insert(marker.id);
    assert_eq!(
        requested_orders(&first.infra, with_marker.len()).await,
        with_marker
    );
    assert_eq!(requested(&first.infra.js).await.len(), with_marker.len());

    // Replay the same events into a fresh database and stream, with two replicas sharing the
    // consumer: the same decisions.
    let infra = Infra::start().await;
    let _a = replica(&infra, &args).await;
    let _b = replica(&infra, &args).await;
    publish_orders(&infra.js, &orders).await;
    let d2 = settle(&infra, &orders).await;
    assert_eq!(d2, d1, "a replay decides the same");
    assert_eq!(
        requested_orders(&infra, invited_first.len()).await,
        invited_first
    );
}

#[test]
fn bad_settings_exit_64_naming_the_setting() {
    let run = |env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jetmart-survey"))
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let base = [
        ("DATABASE_URL", "postgres://survey@127.0.0.1:1/survey"),
        ("SURVEY_PUBLIC_URL", "https://survey.example"),
    ];
    for (name, value) in [
        ("SURVEY_MIN_ORDER", "EUR:lots"),
        ("SURVEY_MIN_ORDER", "euro:100"),
        ("SURVEY_SAMPLE_RATE", "2"),
        ("SURVEY_COOLDOWN", "a while"),
        ("SURVEY_TOKEN_TTL", "0"),
        ("SURVEY_PUBLIC_URL", "ftp://survey.example"),
    ] {
        let mut env: Vec<(&str, &str)> = base.iter().copied().filter(|(k, _)| *k != name).collect();
        env.push((name, value));
        let (code, stderr) = run(&env);
        assert_eq!(code, Some(64), "{name}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(name), "{name}={value}: {stderr}");
    }
    let (code, stderr) = run(&base[..1]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("SURVEY_PUBLIC_URL"), "{stderr}");
}
