//! The notification service alone against real NATS, Postgres and a real SMTP server (the
//! testkit's aiosmtpd sink): upstream events published by hand with proper envelopes, emails
//! read back from what the SMTP server received.

use std::collections::BTreeSet;
use std::time::Duration;

use clap::Parser;
use jetmart_notification::app;
use jetmart_notification::config::Config;
use jetmart_notification::domain::{EmailTemplate, message_id};
use jetmart_proto::common::v1::{Money, OrderLine, Shortage};
use jetmart_proto::notification::v1::list_notifications_request::Filter;
use jetmart_proto::notification::v1::notification_service_client::NotificationServiceClient;
use jetmart_proto::notification::v1::{
    self as pb, NotificationFailed, NotificationSent, NotificationStatus, NotificationTemplate,
};
use jetmart_proto::order::v1::{CancelReason, OrderCancelled, OrderConfirmed};
use jetmart_proto::survey::v1::SurveyRequested;
use jetmart_runtime::OutgoingEvent;
use jetmart_testkit::{NatsServer, ReceivedMail, SmtpMode, SmtpSink, TestDatabase, pg, wait_until};
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

struct Running {
    client: NotificationServiceClient<Channel>,
    js: async_nats::jetstream::Context,
    smtp: SmtpSink,
    db: TestDatabase,
    shutdown: CancellationToken,
    _nats: NatsServer,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Running {
    start_with(&[]).await
}

async fn start_with(extra: &[&str]) -> Running {
    let nats = NatsServer::start().await.unwrap();
    let db = pg::fresh_database().await.unwrap();
    let smtp = SmtpSink::start().await.unwrap();
    let smtp_url = smtp.url();
    let nats_url = nats.url();
    let mut args = vec![
        "jetmart-notification",
        "--nats-url",
        &nats_url,
        "--database-url",
        db.url(),
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--smtp-url",
        &smtp_url,
        "--smtp-from",
        "jetmart <shop@jetmart.test>",
    ];
    args.extend_from_slice(extra);
    let config = Config::try_parse_from(args).unwrap();
    config.validate().unwrap();
    let app = app::build(config).await.unwrap();
    let addr = app.grpc_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    let client = NotificationServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let js = nats.jetstream().await.unwrap();
    // Streams and durable consumers are provisioned by the service once it runs.
    wait_until("notification consumers provisioned", WAIT, || {
        let js = js.clone();
        async move {
            for stream in ["ORDER", "SURVEY"] {
                let Ok(s) = js.get_stream(stream).await else {
                    return false;
                };
                if s.consumer_info("notification").await.is_err() {
                    return false;
                }
            }
            js.get_stream("NOTIFICATION").await.is_ok()
        }
    })
    .await;
    Running {
        client,
        js,
        smtp,
        db,
        shutdown,
        _nats: nats,
    }
}

fn money(minor: i64, currency: &str) -> Option<Money> {
    Some(Money {
        amount_minor: minor,
        currency: currency.into(),
    })
}

fn line(sku: &str, quantity: i32, unit_minor: i64, currency: &str) -> OrderLine {
    OrderLine {
        sku: sku.into(),
        quantity,
        unit_price: money(unit_minor, currency),
    }
}

fn confirmed(customer: &str, email: &str) -> OrderConfirmed {
    OrderConfirmed {
        order_id: Uuid::now_v7().to_string(),
        customer_id: customer.into(),
        customer_email: email.into(),
        lines: vec![
            line("MUG-RED", 2, 1250, "EUR"),
            line("TEA-<b>&co", 1, 99, "EUR"),
        ],
        total: money(2599, "EUR"),
        payment_id: Uuid::now_v7().to_string(),
        ..Default::default()
    }
}

fn cancelled(customer: &str, email: &str, reason: CancelReason) -> OrderCancelled {
    OrderCancelled {
        order_id: Uuid::now_v7().to_string(),
        customer_id: customer.into(),
        customer_email: email.into(),
        lines: vec![line("MUG-RED", 2, 1250, "EUR")],
        total: money(2500, "EUR"),
        reason: reason as i32,
        ..Default::default()
    }
}

fn survey(customer: &str, email: &str, link: &str) -> SurveyRequested {
    SurveyRequested {
        survey_id: Uuid::now_v7().to_string(),
        order_id: Uuid::now_v7().to_string(),
        customer_id: customer.into(),
        customer_email: email.into(),
        token: "tok123".into(),
        link: link.into(),
        expires_at: Some(prost_types::Timestamp {
            seconds: 1_900_000_000,
            nanos: 0,
        }),
        ..Default::default()
    }
}

impl Running {
    /// Publishes `event` as `source` would, with its CloudEvents headers.
    async fn publish<E: jetmart_proto::Event>(
        &self,
        source: &str,
        aggregate: &str,
        event: &E,
    ) -> OutgoingEvent {
        let e = OutgoingEvent::new(source, aggregate, event);
        self.send(&e, e.nats_headers()).await;
        e
    }

    /// The same event (same ce-id) published again under a new Nats-Msg-Id, as a producer
    /// re-sending after JetStream's duplicate window would: the consumer sees it twice.
    async fn republish(&self, e: &OutgoingEvent) {
        let mut headers = e.nats_headers();
        headers.insert("Nats-Msg-Id", Uuid::now_v7().to_string().as_str());
        self.send(e, headers).await;
    }

    async fn send(&self, e: &OutgoingEvent, headers: async_nats::HeaderMap) {
        self.js
            .send_publish(
                e.subject.clone(),
                async_nats::jetstream::message::PublishMessage::build()
                    .headers(headers)
                    .payload(e.payload.clone()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    async fn consumer(&self, stream: &str) -> async_nats::jetstream::consumer::Info {
        self.js
            .get_stream(stream)
            .await
            .unwrap()
            .consumer_info("notification")
            .await
            .unwrap()
    }

    /// Every published event has been handled and acknowledged by both consumers.
    async fn wait_drained(&self) {
        wait_until("notification consumers drained", WAIT, || async {
            for stream in ["ORDER", "SURVEY"] {
                let info = self.consumer(stream).await;
                if info.num_pending > 0 || info.num_ack_pending > 0 {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// Waits until `stream`'s consumer made at least `n` deliveries (first ones and retries).
    async fn wait_deliveries(&self, stream: &str, n: u64) {
        wait_until(&format!("{n} deliveries on {stream}"), WAIT, || async {
            self.consumer(stream).await.delivered.consumer_sequence >= n
        })
        .await;
    }

    async fn mails_to(&self, address: &str) -> Vec<ReceivedMail> {
        self.smtp
            .messages()
            .into_iter()
            .filter(|m| m.envelope_to.iter().any(|t| t == address))
            .collect()
    }

    async fn list(
        &mut self,
        filter: Filter,
        page_size: i32,
        token: &str,
    ) -> pb::ListNotificationsResponse {
        self.client
            .list_notifications(pb::ListNotificationsRequest {
                filter: Some(filter),
                page_size,
                page_token: token.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn by_order(&mut self, order_id: &str) -> Vec<pb::Notification> {
        self.list(Filter::OrderId(order_id.into()), 100, "")
            .await
            .notifications
    }

    /// Every message on the NOTIFICATION stream: (subject, ce-type, causation id, payload).
    async fn notification_events(&self) -> Vec<(String, String, String, Vec<u8>)> {
        let mut stream = self.js.get_stream("NOTIFICATION").await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            let Ok(m) = stream.get_raw_message(seq).await else {
                continue;
            };
            let h = |name: &str| {
                m.headers
                    .get(name)
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default()
            };
            out.push((
                m.subject.to_string(),
                h("ce-type"),
                h("jetmart-causation-id"),
                m.payload.to_vec(),
            ));
        }
        out
    }

    async fn wait_notification_events(&self, n: usize) -> Vec<(String, String, String, Vec<u8>)> {
        wait_until(&format!("{n} notification events"), WAIT, || async {
            self.notification_events().await.len() >= n
        })
        .await;
        self.notification_events().await
    }

    async fn deadletters(&self) -> u64 {
        let mut s = self.js.get_stream("DEADLETTER").await.unwrap();
        s.info().await.unwrap().state.messages
    }

    async fn rows(&self) -> i64 {
        let pool = self.db.pool().await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM notifications")
            .fetch_one(&pool)
            .await
            .unwrap()
    }
}

fn ids(mails: &[ReceivedMail]) -> BTreeSet<String> {
    mails.iter().filter_map(|m| m.message_id.clone()).collect()
}

#[tokio::test]
async fn a_confirmed_order_gets_exactly_one_confirmation_email_with_lines_and_totals() {
    let mut s = start_with(&["--smtp-username", "mailer", "--smtp-password", "s3cret"]).await;
    let order = confirmed("cust-1", "ada@example.com");
    let event = s.publish("order", &order.order_id, &order).await;
    let yen = OrderConfirmed {
        customer_email: "yuki@example.jp".into(),
        lines: vec![line("MATCHA", 3, 400, "JPY")],
        total: money(1200, "JPY"),
        ..confirmed("cust-2", "")
    };
    s.publish("order", &yen.order_id, &yen).await;
    s.smtp.wait_for(2, WAIT).await.unwrap();
    s.wait_drained().await;

    let mails = s.mails_to("ada@example.com").await;
    assert_eq!(mails.len(), 1, "exactly one confirmation");
    let mail = &mails[0];
    let expected_id = message_id(event.id, EmailTemplate::OrderConfirmed);
    assert_eq!(mail.message_id.as_deref(), Some(expected_id.as_str()));
    assert_eq!(mail.envelope_from, "shop@jetmart.test");
    assert_eq!(mail.from.as_deref(), Some("jetmart <shop@jetmart.test>"));
    assert_eq!(mail.auth_login.as_deref(), Some("mailer"), "SMTP AUTH used");
    assert_eq!(
        mail.subject.as_deref(),
        Some(format!("Your jetmart order {} is confirmed", order.order_id).as_str())
    );
    assert!(
        mail.text.contains(
            "  2 x MUG-RED at 12.50 EUR = 25.00 EUR\n  1 x TEA-<b>&co at 0.99 EUR = 0.99 EUR\n"
        ),
        "{}",
        mail.text
    );
    assert!(mail.text.contains("Total: 25.99 EUR"));
    let html = mail.html.as_deref().expect("an HTML part");
    assert!(html.contains("<td>MUG-RED</td>"), "{html}");
    assert!(
        html.contains("<td>TEA-&lt;b&gt;&amp;co</td>"),
        "escaped: {html}"
    );
    assert!(
        !html.contains("TEA-<b>"),
        "markup from data never reaches the HTML"
    );
    assert!(html.contains("<strong>25.99 EUR</strong>"));

    let yen_mail = &s.mails_to("yuki@example.jp").await[0];
    assert!(
        yen_mail
            .text
            .contains("  3 x MATCHA at 400 JPY = 1200 JPY\n")
    );
    assert!(yen_mail.text.contains("Total: 1200 JPY"));

    // Recorded as sent, and announced.
    let listed = s.by_order(&order.order_id).await;
    assert_eq!(listed.len(), 1);
    let n = &listed[0];
    assert_eq!(n.status(), NotificationStatus::Sent);
    assert_eq!(n.template(), NotificationTemplate::OrderConfirmation);
    assert_eq!(n.recipient, "ada@example.com");
    assert_eq!(n.customer_id, "cust-1");
    assert_eq!(n.message_id, expected_id);
    assert_eq!(n.attempts, 1);
    assert!(n.error.is_empty());
    let events = s.wait_notification_events(2).await;
    let (subject, ce_type, causation, payload) = events
        .iter()
        .find(|e| e.0 == format!("notification.sent.{}", n.notification_id))
        .expect("notification.sent for it");
    assert_eq!(
        ce_type, "jetmart.notification.v1.NotificationSent",
        "{subject}"
    );
    assert_eq!(causation, &event.id.to_string());
    let sent = NotificationSent::decode(payload.as_slice()).unwrap();
    assert_eq!(sent.message_id, expected_id);
    assert_eq!(sent.order_id, order.order_id);
    assert_eq!(sent.recipient, "ada@example.com");
    assert_eq!(sent.template(), NotificationTemplate::OrderConfirmation);
    assert_eq!(s.rows().await, 2);
    assert_eq!(s.deadletters().await, 0);
}

#[tokio::test]
async fn a_cancelled_order_gets_exactly_one_cancellation_email_with_the_reason() {
    let mut s = start().await;
    let out_of_stock = OrderCancelled {
        shortages: vec![Shortage {
            sku: "MUG-RED".into(),
            requested: 2,
            available: 1,
        }],
        ..cancelled("cust-1", "bo@example.com", CancelReason::OutOfStock)
    };
    let event = s
        .publish("order", &out_of_stock.order_id, &out_of_stock)
        .await;
    let declined = cancelled("cust-2", "cy@example.com", CancelReason::PaymentDeclined);
    s.publish("order", &declined.order_id, &declined).await;
    s.smtp.wait_for(2, WAIT).await.unwrap();
    s.wait_drained().await;

    let mails = s.mails_to("bo@example.com").await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(
        mail.message_id.as_deref(),
        Some(message_id(event.id, EmailTemplate::OrderCancelled).as_str())
    );
    assert_eq!(
        mail.subject.as_deref(),
        Some(format!("Your jetmart order {} was cancelled", out_of_stock.order_id).as_str())
    );
    assert!(
        mail.text.contains(
            "was cancelled: some items are out of stock.\n\nNot enough stock for:\n  MUG-RED: 2 requested, 1 available\n"
        ),
        "{}",
        mail.text
    );
    assert!(mail.text.contains("Total: 25.00 EUR"));
    assert!(
        mail.html
            .as_deref()
            .unwrap()
            .contains("<li>MUG-RED: 2 requested, 1 available</li>")
    );
    let other = s.mails_to("cy@example.com").await;
    assert_eq!(other.len(), 1);
    assert!(
        other[0]
            .text
            .contains("was cancelled: the payment was declined.")
    );
    assert!(!other[0].text.contains("Not enough stock"));

    let listed = s.by_order(&out_of_stock.order_id).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].template(),
        NotificationTemplate::OrderCancellation
    );
    assert_eq!(listed[0].status(), NotificationStatus::Sent);
}

#[tokio::test]
async fn survey_requested_gets_one_survey_email_with_the_link() {
    let mut s = start().await;
    let link = "https://shop.example/s/tok123?src=email&v=2";
    let request = survey("cust-9", "di@example.com", link);
    let event = s.publish("survey", &request.survey_id, &request).await;
    let mails = s.smtp.wait_for(1, WAIT).await.unwrap();
    s.wait_drained().await;
    assert_eq!(s.smtp.messages().len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.envelope_to, vec!["di@example.com"]);
    assert_eq!(
        mail.message_id.as_deref(),
        Some(message_id(event.id, EmailTemplate::SurveyInvitation).as_str())
    );
    assert_eq!(
        mail.subject.as_deref(),
        Some("How likely are you to recommend jetmart?")
    );
    assert!(mail.text.contains(&format!("\n{link}\n")), "{}", mail.text);
    assert!(mail.text.contains("expires on 2030-03-17 17:46 UTC."));
    let html = mail.html.as_deref().unwrap();
    assert!(
        html.contains("<a href=\"https://shop.example/s/tok123?src=email&amp;v=2\">"),
        "{html}"
    );

    let listed = s
        .list(Filter::CustomerId("cust-9".into()), 0, "")
        .await
        .notifications;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].template(), NotificationTemplate::SurveyInvitation);
    assert_eq!(listed[0].survey_id, request.survey_id);
    assert_eq!(listed[0].order_id, request.order_id);
}

#[tokio::test]
async fn the_same_event_delivered_twice_sends_one_email() {
    let mut s = start().await;
    let order = confirmed("cust-1", "ed@example.com");
    let event = s.publish("order", &order.order_id, &order).await;
    s.smtp.wait_for(1, WAIT).await.unwrap();
    // Twice more: a re-send JetStream deduplicates, and one past its window it does not.
    s.publish_again(&event).await;
    s.republish(&event).await;
    s.wait_deliveries("ORDER", 2).await;
    s.wait_drained().await;
    assert_eq!(s.consumer("ORDER").await.delivered.stream_sequence, 2);

    assert_eq!(s.smtp.messages().len(), 1, "one email for one event");
    assert_eq!(s.by_order(&order.order_id).await.len(), 1);
    assert_eq!(s.rows().await, 1);
    let events = s.wait_notification_events(1).await;
    assert_eq!(events.len(), 1, "one notification.sent");

    // Even with the runtime's processed-event record gone (pruned, restored from a backup),
    // the (event, template) row stops a second send.
    let pool = s.db.pool().await.unwrap();
    let deleted = sqlx::query("DELETE FROM jetmart_processed WHERE event_id = $1")
        .bind(event.id)
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(deleted, 1);
    s.republish(&event).await;
    s.wait_deliveries("ORDER", 3).await;
    s.wait_drained().await;
    assert_eq!(s.smtp.messages().len(), 1, "still one email");
    assert_eq!(s.rows().await, 1);
    assert_eq!(s.notification_events().await.len(), 1);
}

impl Running {
    /// The exact same message again (same Nats-Msg-Id): JetStream drops it.
    async fn publish_again(&self, e: &OutgoingEvent) {
        self.send(e, e.nats_headers()).await;
    }
}

#[tokio::test]
async fn relay_down_then_back_delivers_every_email_once() {
    let mut s = start().await;
    // A first email opens a pooled connection that the outage then breaks.
    let warm = confirmed("cust-0", "warm@example.com");
    s.publish("order", &warm.order_id, &warm).await;
    s.smtp.wait_for(1, WAIT).await.unwrap();
    s.wait_drained().await;

    s.smtp.stop();
    let a = confirmed("cust-1", "fa@example.com");
    let b = confirmed("cust-2", "fb@example.com");
    let c = cancelled("cust-3", "fc@example.com", CancelReason::Customer);
    let d = survey("cust-4", "fd@example.com", "https://shop.example/s/x");
    let mut expected = BTreeSet::new();
    let e = s.publish("order", &a.order_id, &a).await;
    expected.insert(message_id(e.id, EmailTemplate::OrderConfirmed));
    let e = s.publish("order", &b.order_id, &b).await;
    expected.insert(message_id(e.id, EmailTemplate::OrderConfirmed));
    let e = s.publish("order", &c.order_id, &c).await;
    expected.insert(message_id(e.id, EmailTemplate::OrderCancelled));
    let e = s.publish("survey", &d.survey_id, &d).await;
    expected.insert(message_id(e.id, EmailTemplate::SurveyInvitation));
    // Every one tried at least twice while the relay refuses connections.
    s.wait_deliveries("ORDER", 1 + 3 * 2).await;
    s.wait_deliveries("SURVEY", 2).await;
    assert_eq!(
        s.rows().await,
        1,
        "nothing recorded while the relay is down"
    );
    assert_eq!(s.deadletters().await, 0);

    s.smtp.restart().await.unwrap();
    s.smtp.wait_for(5, WAIT).await.unwrap();
    s.wait_drained().await;
    let mails = s.smtp.messages();
    assert_eq!(mails.len(), 5, "none lost, none doubled");
    let got = ids(&mails[1..]);
    assert_eq!(got, expected, "one email per event, by Message-ID");
    for order_id in [&a.order_id, &b.order_id, &c.order_id] {
        let listed = s.by_order(order_id).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status(), NotificationStatus::Sent);
        assert!(listed[0].attempts >= 2, "retried: {}", listed[0].attempts);
    }
    assert_eq!(s.deadletters().await, 0);
}

#[tokio::test]
async fn temporary_smtp_rejections_are_retried_until_accepted() {
    let mut s = start().await;
    s.smtp.set_mode(SmtpMode::TempFail).unwrap();
    let order = confirmed("cust-1", "ga@example.com");
    let event = s.publish("order", &order.order_id, &order).await;
    s.wait_deliveries("ORDER", 2).await;
    s.smtp.set_mode(SmtpMode::TempFailOnData).unwrap();
    let seen = s.consumer("ORDER").await.delivered.consumer_sequence;
    s.wait_deliveries("ORDER", seen + 2).await;
    assert!(s.smtp.messages().is_empty());
    assert!(s.by_order(&order.order_id).await.is_empty());

    s.smtp.set_mode(SmtpMode::Accept).unwrap();
    s.smtp.wait_for(1, WAIT).await.unwrap();
    s.wait_drained().await;
    let mails = s.smtp.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!(
        mails[0].message_id.as_deref(),
        Some(message_id(event.id, EmailTemplate::OrderConfirmed).as_str())
    );
    let listed = s.by_order(&order.order_id).await;
    assert_eq!(listed[0].status(), NotificationStatus::Sent);
    assert!(listed[0].attempts >= 4, "{}", listed[0].attempts);
    assert_eq!(s.deadletters().await, 0);
}

#[tokio::test]
async fn a_permanent_rejection_is_recorded_as_failed_and_announced() {
    let mut s = start().await;
    s.smtp.set_mode(SmtpMode::Reject).unwrap();
    let at_rcpt = confirmed("cust-1", "ha@example.com");
    let e1 = s.publish("order", &at_rcpt.order_id, &at_rcpt).await;
    let events = s.wait_notification_events(1).await;
    s.smtp.set_mode(SmtpMode::RejectOnData).unwrap();
    let at_data = cancelled("cust-1", "ha@example.com", CancelReason::Customer);
    s.publish("order", &at_data.order_id, &at_data).await;
    s.wait_notification_events(2).await;
    // A recipient no relay could take: failed without an SMTP attempt.
    s.smtp.set_mode(SmtpMode::Accept).unwrap();
    let bad_address = confirmed("cust-2", "not an address");
    s.publish("order", &bad_address.order_id, &bad_address)
        .await;
    let events2 = s.wait_notification_events(3).await;
    s.wait_drained().await;

    assert!(s.smtp.messages().is_empty(), "nothing was accepted");
    assert_eq!(s.deadletters().await, 0, "recorded, not dead-lettered");
    let (_, ce_type, causation, payload) = &events[0];
    assert_eq!(ce_type, "jetmart.notification.v1.NotificationFailed");
    assert_eq!(causation, &e1.id.to_string());
    let failed = NotificationFailed::decode(payload.as_slice()).unwrap();
    assert!(failed.permanent);
    assert!(failed.error.contains("550"), "{}", failed.error);
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.order_id, at_rcpt.order_id);
    assert_eq!(
        failed.message_id,
        message_id(e1.id, EmailTemplate::OrderConfirmed)
    );
    assert!(
        events2
            .iter()
            .all(|e| e.1 == "jetmart.notification.v1.NotificationFailed")
    );

    for (order_id, fragment) in [
        (&at_rcpt.order_id, "550"),
        (&at_data.order_id, "550"),
        (&bad_address.order_id, "invalid message"),
    ] {
        let listed = s.by_order(order_id).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status(), NotificationStatus::Failed);
        assert!(listed[0].error.contains(fragment), "{}", listed[0].error);
        assert_eq!(listed[0].attempts, 1, "not retried");
    }

    // Not stuck: the next email goes out.
    let ok = confirmed("cust-3", "ok@example.com");
    s.publish("order", &ok.order_id, &ok).await;
    s.smtp.wait_for(1, WAIT).await.unwrap();
}

#[tokio::test]
async fn a_commit_lost_after_the_relay_accepted_resends_with_the_same_message_id() {
    let mut s = start().await;
    // Make the first handler transaction fail at COMMIT, after the SMTP server accepted the
    // email: the kill window, reproduced deterministically. nextval survives the rollback.
    let pool = s.db.pool().await.unwrap();
    for sql in [
        "CREATE SEQUENCE test_commit_attempts",
        "CREATE FUNCTION test_fail_first_commit() RETURNS trigger AS $$
         BEGIN
             IF nextval('test_commit_attempts') = 1 THEN
                 RAISE EXCEPTION 'injected: commit lost';
             END IF;
             RETURN NULL;
         END $$ LANGUAGE plpgsql",
        "CREATE CONSTRAINT TRIGGER test_fail_first_commit AFTER INSERT ON notifications
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_fail_first_commit()",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let order = confirmed("cust-1", "ka@example.com");
    let event = s.publish("order", &order.order_id, &order).await;
    let mails = s.smtp.wait_for(2, WAIT).await.unwrap();
    s.wait_drained().await;

    let expected = message_id(event.id, EmailTemplate::OrderConfirmed);
    assert_eq!(mails.len(), 2, "the documented duplicate");
    assert!(
        mails
            .iter()
            .all(|m| m.message_id.as_deref() == Some(expected.as_str())),
        "both copies carry the same Message-ID"
    );
    let listed = s.by_order(&order.order_id).await;
    assert_eq!(listed.len(), 1, "one notification recorded");
    assert_eq!(listed[0].attempts, 2);
    assert_eq!(s.wait_notification_events(1).await.len(), 1);
}

#[tokio::test]
async fn malformed_events_are_dead_lettered_without_an_email() {
    let s = start().await;
    let bad = OrderConfirmed {
        order_id: "not-a-uuid".into(),
        ..confirmed("cust-1", "la@example.com")
    };
    s.publish("order", "not-a-uuid", &bad).await;
    wait_until("dead letter", WAIT, || async { s.deadletters().await == 1 }).await;
    s.wait_drained().await;
    let mut dl = s.js.get_stream("DEADLETTER").await.unwrap();
    let msg = dl
        .get_last_raw_message_by_subject("deadletter.notification.order.confirmed.not-a-uuid")
        .await
        .unwrap();
    assert_eq!(
        msg.headers.get("ce-type").unwrap().as_str(),
        "jetmart.order.v1.OrderConfirmed"
    );
    assert!(dl.info().await.unwrap().state.messages == 1);
    assert!(s.smtp.messages().is_empty());
    assert_eq!(s.rows().await, 0);
}

#[tokio::test]
async fn list_pages_newest_first_by_customer_and_filters_by_order() {
    let mut s = start().await;
    let mut orders = Vec::new();
    for i in 0..5 {
        let o = confirmed("cust-list", &format!("m{i}@example.com"));
        s.publish("order", &o.order_id, &o).await;
        orders.push(o.order_id);
    }
    let other = confirmed("cust-other", "other@example.com");
    s.publish("order", &other.order_id, &other).await;
    s.smtp.wait_for(6, WAIT).await.unwrap();
    s.wait_drained().await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = s
            .list(Filter::CustomerId("cust-list".into()), 2, &token)
            .await;
        assert!(page.notifications.len() <= 2);
        pages += 1;
        seen.extend(page.notifications);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let mut listed: Vec<String> = seen.iter().map(|n| n.order_id.clone()).collect();
    let keys: Vec<(i64, i32, String)> = seen
        .iter()
        .map(|n| {
            let t = n.created_at.unwrap();
            (t.seconds, t.nanos, n.notification_id.clone())
        })
        .collect();
    let mut newest_first = keys.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(keys, newest_first, "newest first");
    listed.sort();
    let mut all = orders.clone();
    all.sort();
    assert_eq!(listed, all, "each of the customer's notifications once");
    assert!(seen.iter().all(|n| n.customer_id == "cust-list"));

    let one = s.by_order(&orders[2]).await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].order_id, orders[2]);
    let none = s.list(Filter::CustomerId("nobody".into()), 0, "").await;
    assert!(none.notifications.is_empty() && none.next_page_token.is_empty());
    // Over-large pages are capped, not refused.
    let capped = s
        .list(Filter::CustomerId("cust-list".into()), 100_000, "")
        .await;
    assert_eq!(capped.notifications.len(), 5);
}

#[tokio::test]
async fn bad_list_requests_name_every_bad_field() {
    let mut s = start().await;
    let cases: Vec<(pb::ListNotificationsRequest, Vec<&str>)> = vec![
        (
            pb::ListNotificationsRequest {
                filter: None,
                page_size: 0,
                page_token: String::new(),
            },
            vec!["filter"],
        ),
        (
            pb::ListNotificationsRequest {
                filter: Some(Filter::OrderId("nope".into())),
                page_size: -1,
                page_token: "zz".into(),
            },
            vec!["order_id", "page_size", "page_token"],
        ),
        (
            pb::ListNotificationsRequest {
                filter: Some(Filter::CustomerId(String::new())),
                page_size: 0,
                page_token: String::new(),
            },
            vec!["customer_id"],
        ),
        (
            pb::ListNotificationsRequest {
                filter: Some(Filter::CustomerId("c".repeat(10_000))),
                page_size: 0,
                page_token: String::new(),
            },
            vec!["customer_id"],
        ),
    ];
    for (req, fields) in cases {
        let status = s.client.list_notifications(req).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{fields:?}: {status:?}"
        );
        let bad = status
            .get_details_bad_request()
            .expect("BadRequest details");
        let got: Vec<&str> = bad
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(got, fields);
        for field in &fields {
            assert!(status.message().contains(field), "{}", status.message());
        }
    }
}
