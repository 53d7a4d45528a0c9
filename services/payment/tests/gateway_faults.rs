//! Gateway trouble: transient failures are retried with backoff until authorized; an open
//! circuit breaker makes events wait in the stream, and they are handled once it closes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use jetmart_payment::domain::{
    Authorization, AuthorizeOutcome, AuthorizeRequest, BreakerState, GatewayError, GatewayFuture,
    PaymentGateway, SimulatedGateway, SimulatedGatewayConfig,
};
use jetmart_proto::payment::v1 as pb;
use prost::Message;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_are_retried_until_authorized() {
    let h = Harness::start(&[
        "--simulated-failure-rate",
        "0.6",
        "--simulated-seed",
        "7",
        "--retry-max-attempts",
        "10",
        "--retry-base-delay-ms",
        "1",
        "--retry-max-delay-ms",
        "5",
        // Keep the breaker out of this test.
        "--breaker-failure-threshold",
        "1000",
    ])
    .await;
    let mut transient = 0;
    for _ in 0..5 {
        // One at a time, so the seeded gateway sees the same call sequence on every run.
        let order = Uuid::now_v7();
        h.publish(&reserved(order, 1234, "tok_visa")).await;
        h.wait_events(order, &[AUTHORIZED]).await;
        let attempts = h.attempts(order).await;
        assert_eq!(
            attempts.last().map(String::as_str),
            Some("AUTHORIZE:AUTHORIZED")
        );
        assert!(
            attempts[..attempts.len() - 1]
                .iter()
                .all(|a| a == "AUTHORIZE:TRANSIENT_ERROR"),
            "{attempts:?}"
        );
        transient += attempts.len() - 1;
        let p = h.get_payment(order).await.unwrap();
        assert_eq!(p.status(), pb::PaymentStatus::Authorized);
        assert_eq!(p.attempts as usize, attempts.len());
    }
    assert!(
        transient > 0,
        "a failure rate of 0.6 with seed 7 fails some calls"
    );
    assert_eq!(h.stream_len("DEADLETTER").await, 0);
    h.stop().await;
}

/// The simulated provider with a switchable outage in front (every call fails transiently
/// while it is down, before reaching the provider).
struct Outage {
    gateway: SimulatedGateway,
    down: AtomicBool,
}

impl Outage {
    fn fail<'a, T: Send + 'a>() -> GatewayFuture<'a, T> {
        Box::pin(async { Err(GatewayError::Transient("simulated outage".into())) })
    }
}

impl PaymentGateway for Outage {
    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizeRequest,
    ) -> GatewayFuture<'a, AuthorizeOutcome> {
        if self.down.load(Ordering::SeqCst) {
            return Self::fail();
        }
        self.gateway.authorize(request)
    }

    fn capture<'a>(&'a self, authorization: &'a Authorization) -> GatewayFuture<'a, ()> {
        if self.down.load(Ordering::SeqCst) {
            return Self::fail();
        }
        self.gateway.capture(authorization)
    }

    fn void<'a>(&'a self, authorization: &'a Authorization) -> GatewayFuture<'a, ()> {
        if self.down.load(Ordering::SeqCst) {
            return Self::fail();
        }
        self.gateway.void(authorization)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn open_breaker_makes_events_wait_until_it_closes() {
    let outage = Arc::new(Outage {
        gateway: SimulatedGateway::new(SimulatedGatewayConfig::default()),
        down: AtomicBool::new(true),
    });
    let h = Harness::start_with_gateway(
        &[
            "--breaker-failure-threshold",
            "2",
            "--breaker-cool-down-ms",
            "300",
            "--retry-max-attempts",
            "2",
            "--retry-base-delay-ms",
            "1",
            "--retry-max-delay-ms",
            "2",
        ],
        outage.clone(),
    )
    .await;
    // An outage fails every card: two distinct cards open the gateway-wide breaker.
    let first = Uuid::now_v7();
    h.publish(&reserved(first, 700, "tok_visa")).await;
    let early = Uuid::now_v7();
    h.publish(&reserved(early, 600, "tok_mastercard")).await;
    wait_until("breaker open", WAIT, || async {
        h.breaker.state() == BreakerState::Open
    })
    .await;
    // Redeliveries while it is open are refused without calling the gateway.
    let refusals = "jetmart_payment_gateway_circuit_open_refusals_total{operation=\"Authorize\"}";
    wait_until("calls refused by the open breaker", WAIT, || async {
        h.metric(refusals).await >= 1.0
    })
    .await;

    // A second order arriving during the outage waits as well.
    let second = Uuid::now_v7();
    let second_event = reserved(second, 800, "tok_visa");
    h.publish(&second_event).await;
    wait_until("second order reached the service", WAIT, || async {
        scalar(
            &h.pool,
            &format!("SELECT count(*) FROM payments WHERE order_id = '{second}'"),
        )
        .await
            == 1
    })
    .await;
    let refused_before = h.metric(refusals).await;
    wait_until("more refusals", WAIT, || async {
        h.metric(refusals).await > refused_before
    })
    .await;
    for order in [first, second] {
        assert!(h.payment_events(order).await.is_empty());
        assert_eq!(
            h.get_payment(order).await.unwrap().status(),
            pb::PaymentStatus::Pending
        );
    }
    let mut failed_calls = 0;
    for order in [first, early, second] {
        failed_calls += h.attempts(order).await.len();
    }
    assert!(failed_calls >= 2);

    // The gateway recovers: the next half-open trial closes the breaker and both orders go through.
    outage.down.store(false, Ordering::SeqCst);
    h.wait_events(first, &[AUTHORIZED]).await;
    h.wait_events(second, &[AUTHORIZED]).await;
    h.wait_events(early, &[AUTHORIZED]).await;
    h.wait_drained("INVENTORY").await;
    assert_eq!(h.breaker.state(), BreakerState::Closed);
    for order in [first, second] {
        let attempts = h.attempts(order).await;
        assert_eq!(
            attempts.last().map(String::as_str),
            Some("AUTHORIZE:AUTHORIZED"),
            "{attempts:?}"
        );
        assert_eq!(
            attempts
                .iter()
                .filter(|a| a.ends_with(":AUTHORIZED"))
                .count(),
            1
        );
        assert_eq!(
            h.get_payment(order).await.unwrap().status(),
            pb::PaymentStatus::Authorized
        );
    }
    assert!(
        h.metric("jetmart_events_redelivered_total{consumer=\"payment\"}")
            .await
            >= 1.0
    );
    assert_eq!(h.stream_len("DEADLETTER").await, 0, "nothing was lost");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_failing_card_does_not_open_the_breaker_for_everyone() {
    let h = Harness::start(&[
        "--breaker-failure-threshold",
        "2",
        "--breaker-cool-down-ms",
        "60000",
        "--retry-max-attempts",
        "3",
        "--retry-base-delay-ms",
        "1",
        "--retry-max-delay-ms",
        "2",
    ])
    .await;
    let bad = Uuid::now_v7();
    h.publish(&reserved(bad, 500, "tok_transient")).await;
    wait_until("the failing card was tried and refused", WAIT, || async {
        h.breaker.card_state("tok_transient") == BreakerState::Open
    })
    .await;
    assert!(h.attempts(bad).await.len() >= 2);
    assert_eq!(
        h.breaker.state(),
        BreakerState::Closed,
        "one card's failures leave the gateway-wide breaker closed"
    );
    // Another customer pays at once, with one call.
    let good = Uuid::now_v7();
    h.publish(&reserved(good, 700, "tok_visa")).await;
    h.wait_events(good, &[AUTHORIZED]).await;
    assert_eq!(h.attempts(good).await, ["AUTHORIZE:AUTHORIZED"]);
    assert_eq!(h.breaker.state(), BreakerState::Closed);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_answer_by_the_deadline_declines_as_gateway_unavailable() {
    let h = Harness::start(&[
        "--authorize-deadline-ms",
        "1500",
        "--retry-max-attempts",
        "3",
        "--retry-base-delay-ms",
        "50",
        "--retry-max-delay-ms",
        "100",
    ])
    .await;
    let order = Uuid::now_v7();
    h.publish(&reserved(order, 500, "tok_transient")).await;
    h.wait_events(order, &[DECLINED]).await;
    let events = h.payment_events(order).await;
    let declined = pb::PaymentDeclined::decode(events[0].payload.clone()).unwrap();
    assert_eq!(declined.reason(), pb::DeclineReason::GatewayUnavailable);
    assert!(
        declined.message.contains("deadline"),
        "{}",
        declined.message
    );
    let p = h.get_payment(order).await.unwrap();
    assert_eq!(p.status(), pb::PaymentStatus::Declined);
    assert_eq!(p.decline_reason(), pb::DeclineReason::GatewayUnavailable);
    let attempts = h.attempts(order).await;
    assert!(
        !attempts.is_empty() && attempts.iter().all(|a| a == "AUTHORIZE:TRANSIENT_ERROR"),
        "{attempts:?}"
    );
    // The event is settled, not waiting for more retries or dead-lettered.
    h.wait_drained("INVENTORY").await;
    assert_eq!(h.stream_len("DEADLETTER").await, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_order_stops_the_retries() {
    let h = Harness::start(&[
        "--retry-max-attempts",
        "100",
        "--retry-base-delay-ms",
        "100",
        "--retry-max-delay-ms",
        "200",
        "--breaker-failure-threshold",
        "10000",
    ])
    .await;
    let order = Uuid::now_v7();
    h.publish(&reserved(order, 500, "tok_transient")).await;
    wait_until("retrying", WAIT, || async {
        h.attempts(order).await.len() >= 2
    })
    .await;
    h.publish(&cancelled(order, 500)).await;
    // The reservation's delivery ends (acked) instead of retrying for 100 attempts and more.
    h.wait_drained("INVENTORY").await;
    h.wait_drained("ORDER").await;
    let attempts = h.attempts(order).await;
    assert!(attempts.len() < 100, "{} attempts", attempts.len());
    let p = h.get_payment(order).await.unwrap();
    assert_eq!(p.status(), pb::PaymentStatus::Voided);
    assert!(
        h.payment_events(order).await.is_empty(),
        "nothing was held, nothing announced"
    );
    assert_eq!(
        h.attempts(order).await.len(),
        attempts.len(),
        "no call after the end"
    );
    h.stop().await;
}
