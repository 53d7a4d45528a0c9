//! The payment service's part of the saga, against real NATS and Postgres: authorize, decline,
//! capture exactly once, void, and cancels racing the authorization.

mod common;

use common::*;
use jetmart_proto::payment::v1 as pb;
use prost::Message;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn reserved_stock_is_authorized_and_reported() {
    let h = Harness::start(&[]).await;
    let order = Uuid::now_v7();
    let cause = reserved(order, 2599, "tok_visa");
    h.publish(&cause).await;
    h.wait_events(order, &[AUTHORIZED]).await;

    let events = h.payment_events(order).await;
    let e = &events[0];
    assert_eq!(e.source, "payment");
    assert_eq!(
        e.causation_id.as_deref(),
        Some(cause.id.to_string().as_str())
    );
    let authorized = pb::PaymentAuthorized::decode(e.payload.clone()).unwrap();
    assert_eq!(authorized.order_id, order.to_string());
    assert_eq!(authorized.amount, Some(money(2599, "EUR")));
    assert!(
        authorized.authorization_code.starts_with("auth_"),
        "{authorized:?}"
    );
    assert!(authorized.authorized_at.is_some());

    let p = h.get_payment(order).await.unwrap();
    assert_eq!(p.status(), pb::PaymentStatus::Authorized);
    assert_eq!(p.payment_id, authorized.payment_id);
    assert_eq!(p.authorization_code, authorized.authorization_code);
    assert_eq!(p.amount, Some(money(2599, "EUR")));
    assert_eq!(p.attempts, 1);
    assert!(p.authorized_at.is_some() && p.captured_at.is_none() && p.voided_at.is_none());
    assert_eq!(h.attempts(order).await, ["AUTHORIZE:AUTHORIZED"]);
    let latency: i64 =
        sqlx::query_scalar("SELECT latency_us FROM payment_gateway_attempts WHERE order_id = $1")
            .bind(order)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert!(latency >= 0);
    // Nothing of the token is stored anywhere in the payment tables.
    let leaked = scalar(
        &h.pool,
        "SELECT count(*) FROM payments p WHERE row_to_json(p)::text LIKE '%tok_visa%'",
    )
    .await;
    assert_eq!(leaked, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn decline_rules_end_declined() {
    let h = Harness::start(&[
        "--simulated-decline-above",
        "EUR=50000",
        "--simulated-decline-tokens",
        "tok_fraud=CARD_DECLINED",
    ])
    .await;
    let cases = [
        (
            "tok_decline",
            1000,
            pb::DeclineReason::CardDeclined,
            "CARD_DECLINED",
        ),
        (
            "tok_insufficient_funds",
            1000,
            pb::DeclineReason::InsufficientFunds,
            "INSUFFICIENT_FUNDS",
        ),
        (
            "tok_visa",
            50_001,
            pb::DeclineReason::AmountAboveLimit,
            "AMOUNT_ABOVE_LIMIT",
        ),
        (
            "tok_fraud",
            1000,
            pb::DeclineReason::CardDeclined,
            "CARD_DECLINED",
        ),
        ("", 1000, pb::DeclineReason::InvalidToken, "INVALID_TOKEN"),
    ];
    let mut orders = Vec::new();
    for (token, amount, ..) in cases {
        let order = Uuid::now_v7();
        h.publish(&reserved(order, amount, token)).await;
        orders.push(order);
    }
    // Exactly at the limit is fine.
    let at_limit = Uuid::now_v7();
    h.publish(&reserved(at_limit, 50_000, "tok_visa")).await;

    for (order, (token, _, reason, code)) in orders.iter().zip(cases) {
        h.wait_events(*order, &[DECLINED]).await;
        let e = &h.payment_events(*order).await[0];
        let declined = pb::PaymentDeclined::decode(e.payload.clone()).unwrap();
        assert_eq!(declined.reason(), reason, "{token}");
        assert!(
            declined.message.starts_with(code),
            "{token}: {}",
            declined.message
        );
        let p = h.get_payment(*order).await.unwrap();
        assert_eq!(p.status(), pb::PaymentStatus::Declined);
        assert_eq!(p.decline_reason(), reason);
        assert!(p.decline_message.starts_with(code));
        assert!(p.authorization_code.is_empty());
        assert_eq!(h.attempts(*order).await, ["AUTHORIZE:DECLINED"]);
    }
    h.wait_events(at_limit, &[AUTHORIZED]).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn confirmation_captures_exactly_once_even_when_delivered_twice() {
    let h = Harness::start(&[]).await;
    let order = Uuid::now_v7();
    h.publish(&reserved(order, 4200, "tok_visa")).await;
    h.wait_events(order, &[AUTHORIZED]).await;

    let first = confirmed(order, 4200);
    h.publish(&first).await;
    // The same event again (a redelivery after a lost ack) and a second, distinct confirmation.
    h.publish_copy(&first).await;
    let second = confirmed(order, 4200);
    h.publish(&second).await;
    h.wait_processed(first.id).await;
    h.wait_processed(second.id).await;
    h.wait_drained("ORDER").await;
    h.wait_events(order, &[AUTHORIZED, CAPTURED]).await;

    let captured =
        pb::PaymentCaptured::decode(h.payment_events(order).await[1].payload.clone()).unwrap();
    assert_eq!(captured.amount, Some(money(4200, "EUR")));
    let p = h.get_payment(order).await.unwrap();
    assert_eq!(p.status(), pb::PaymentStatus::Captured);
    assert!(p.captured_at.is_some());
    assert_eq!(
        h.attempts(order).await,
        ["AUTHORIZE:AUTHORIZED", "CAPTURE:CAPTURED"]
    );
    assert_eq!(h.stream_len("DEADLETTER").await, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_after_authorization_voids_and_never_captures() {
    let h = Harness::start(&[]).await;
    let order = Uuid::now_v7();
    h.publish(&reserved(order, 1500, "tok_visa")).await;
    h.wait_events(order, &[AUTHORIZED]).await;

    let cancel = cancelled(order, 1500);
    h.publish(&cancel).await;
    h.wait_events(order, &[AUTHORIZED, VOIDED]).await;

    // Duplicates and late events change nothing: a second cancel, a late reserved.
    let again = cancelled(order, 1500);
    h.publish(&again).await;
    let late = reserved(order, 1500, "tok_visa");
    h.publish(&late).await;
    h.wait_processed(again.id).await;
    h.wait_processed(late.id).await;
    h.wait_drained("ORDER").await;
    h.wait_drained("INVENTORY").await;

    assert_eq!(h.payment_event_types(order).await, [AUTHORIZED, VOIDED]);
    let voided =
        pb::PaymentVoided::decode(h.payment_events(order).await[1].payload.clone()).unwrap();
    assert_eq!(voided.amount, Some(money(1500, "EUR")));
    let p = h.get_payment(order).await.unwrap();
    assert_eq!(p.status(), pb::PaymentStatus::Voided);
    assert!(p.voided_at.is_some() && p.captured_at.is_none());
    assert_eq!(
        h.attempts(order).await,
        ["AUTHORIZE:AUTHORIZED", "VOID:VOIDED"]
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_before_reservation_never_authorizes() {
    let h = Harness::start(&[]).await;
    let order = Uuid::now_v7();
    let cancel = cancelled(order, 990);
    h.publish(&cancel).await;
    h.wait_processed(cancel.id).await;
    let p = h.get_payment(order).await.unwrap();
    assert_eq!(
        p.status(),
        pb::PaymentStatus::Voided,
        "the cancel is recorded"
    );

    let late = reserved(order, 990, "tok_visa");
    h.publish(&late).await;
    h.wait_processed(late.id).await;
    h.wait_drained("INVENTORY").await;

    let p = h.get_payment(order).await.unwrap();
    assert_eq!(p.status(), pb::PaymentStatus::Voided);
    assert!(p.authorization_code.is_empty());
    assert_eq!(p.attempts, 0, "the gateway was never asked");
    assert!(h.attempts(order).await.is_empty());
    assert!(
        h.payment_events(order).await.is_empty(),
        "nothing held, nothing to announce"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_during_authorization_voids_the_late_authorization() {
    // A slow gateway: the cancel lands while the authorize call is in flight.
    let h = Harness::start(&[
        "--simulated-latency-min-ms",
        "1500",
        "--simulated-latency-max-ms",
        "1500",
    ])
    .await;
    let order = Uuid::now_v7();
    h.publish(&reserved(order, 3100, "tok_visa")).await;
    wait_until("authorize call started", WAIT, || async {
        scalar(
            &h.pool,
            &format!("SELECT count(*) FROM payments WHERE order_id = '{order}' AND authorize_requested_at IS NOT NULL"),
        )
        .await
            == 1
    })
    .await;
    let cancel = cancelled(order, 3100);
    h.publish(&cancel).await;
    h.wait_processed(cancel.id).await;
    // The cancel did not wait for the gateway: it is recorded while the call is still running.
    assert_eq!(
        h.get_payment(order).await.unwrap().status(),
        pb::PaymentStatus::Voided
    );
    assert!(
        h.attempts(order).await.is_empty(),
        "authorize still in flight"
    );

    h.wait_events(order, &[VOIDED]).await;
    h.wait_drained("INVENTORY").await;
    let p = h.get_payment(order).await.unwrap();
    assert_eq!(p.status(), pb::PaymentStatus::Voided);
    assert!(
        p.authorization_code.starts_with("auth_"),
        "the late authorization is known"
    );
    assert_eq!(
        h.attempts(order).await,
        ["AUTHORIZE:AUTHORIZED", "VOID:VOIDED"]
    );
    assert_eq!(
        h.payment_event_types(order).await,
        [VOIDED],
        "never announced as authorized"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_out_of_stock_cancel_leaves_no_payment() {
    use jetmart_proto::order::v1::{CancelReason, OrderCancelled};
    let h = Harness::start(&[]).await;
    let order = Uuid::now_v7();
    let e = OrderCancelled {
        order_id: order.to_string(),
        customer_id: "customer-1".into(),
        total: Some(money(500, "EUR")),
        reason: CancelReason::OutOfStock.into(),
        detail: "SKU-1 short by 2".into(),
        ..Default::default()
    };
    let event = jetmart_runtime::OutgoingEvent::new("order", &order.to_string(), &e);
    h.publish(&event).await;
    h.wait_processed(event.id).await;
    let missing = h.get_payment(order).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(scalar(&h.pool, "SELECT count(*) FROM payments").await, 0);
    assert!(h.payment_events(order).await.is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zero_total_is_an_invalid_amount_not_a_card_decline() {
    let h = Harness::start(&[]).await;
    let order = Uuid::now_v7();
    h.publish(&reserved(order, 0, "tok_visa")).await;
    h.wait_events(order, &[DECLINED]).await;
    let events = h.payment_events(order).await;
    let declined = pb::PaymentDeclined::decode(events[0].payload.clone()).unwrap();
    assert_eq!(declined.reason(), pb::DeclineReason::InvalidAmount);
    let p = h.get_payment(order).await.unwrap();
    assert_eq!(p.decline_reason(), pb::DeclineReason::InvalidAmount);
    assert!(h.attempts(order).await.is_empty(), "no gateway call for it");
    h.stop().await;
}
