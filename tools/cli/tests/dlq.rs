//! `jetmartctl dlq` against a real NATS and the runtime's consumer runner: a poison message is
//! listed and shown; after the cause is fixed, a replay is handled exactly once and the
//! dead-letter stream is empty; replaying twice is harmless; unknown ids and misuse are refused.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{ctl, ctl_at, ctl_on_terminal, messages, rows};
use jetmart_e2e::fixtures::{consumer_spec, count, placed, prepare, publish};
use jetmart_proto::order::v1::OrderPlaced;
use jetmart_runtime::catalog::{DEADLETTER, ORDER};
use jetmart_runtime::consumer::{
    ConsumerRunner, HandlerError, PgHandler, PgProcessor, RunnerConfig,
};
use jetmart_runtime::deadletter::{self, Origin, Reason};
use jetmart_runtime::metrics::RuntimeMetrics;
use jetmart_runtime::provision::{self, StreamSettings};
use jetmart_runtime::{IncomingEvent, OutgoingEvent};
use jetmart_testkit::{NatsServer, pg, wait_until};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

const REFUSAL: &str = "price list unavailable: cannot accept order";

/// Records each OrderPlaced in `effects`; while `broken`, fails permanently instead (the bug
/// an operator fixes before replaying).
#[derive(Clone)]
struct Fixable {
    broken: Arc<AtomicBool>,
}

impl PgHandler for Fixable {
    fn handles(&self, event_type: &str) -> bool {
        event_type == "jetmart.order.v1.OrderPlaced"
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &IncomingEvent,
    ) -> Result<(), HandlerError> {
        let placed: OrderPlaced = event.decode()?;
        if self.broken.load(Ordering::SeqCst) {
            return Err(HandlerError::permanent(REFUSAL));
        }
        sqlx::query(
            "INSERT INTO effects (consumer, event_id, aggregate_id, instance) VALUES ('svc', $1, $2, 'a')",
        )
        .bind(event.meta.id)
        .bind(&placed.order_id)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

async fn dead_letter(
    js: &async_nats::jetstream::Context,
    consumer: &str,
    stream_sequence: u64,
    event: &OutgoingEvent,
    payload: Option<&'static [u8]>,
) {
    deadletter::publish(
        js,
        &Origin {
            consumer,
            stream: ORDER.name,
            stream_sequence,
            subject: &event.subject,
            delivered: 3,
        },
        Some(&event.nats_headers()),
        payload.map_or(event.payload.clone(), bytes::Bytes::from_static),
        Reason::Permanent,
        "test: refused",
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_listed_shown_and_after_the_fix_replayed_exactly_once() {
    let nats = NatsServer::start().await.unwrap();
    let url = nats.url();
    let db = pg::fresh_database().await.unwrap();
    let pool = db.pool().await.unwrap();
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    prepare(&pool, &js).await;

    let broken = Arc::new(AtomicBool::new(true));
    let shutdown = CancellationToken::new();
    let runner = ConsumerRunner::new(
        js.clone(),
        RunnerConfig::new(consumer_spec("svc")),
        PgProcessor::new(
            pool.clone(),
            Fixable {
                broken: broken.clone(),
            },
        ),
        RuntimeMetrics::unregistered(),
    );
    let runner = tokio::spawn(runner.run(shutdown.clone()));

    let event = placed("o-1");
    let event_id = event.id.to_string();
    publish(&js, &event).await;
    wait_until(
        "the poison message is dead-lettered",
        Duration::from_secs(30),
        || {
            let js = js.clone();
            async move { messages(&js, DEADLETTER.name).await == 1 }
        },
    )
    .await;

    // Listed: one line with its sequence, consumer, reason, deliveries, subject and error.
    let list = ctl_at(&url, &["dlq", "list"]).await.expect(0);
    let listed = rows(&list.stdout);
    assert_eq!(listed.len(), 1, "{}", list.stdout);
    let row = &listed[0];
    assert_eq!(row[0], "1", "DLQ sequence: {}", list.stdout);
    assert_eq!(&row[2..6], ["svc", "permanent", "1", "order.placed.o-1"]);
    assert!(
        list.stdout.contains("price list unavailable"),
        "{}",
        list.stdout
    );

    // Shown: headers, error, and the payload decoded as OrderPlaced.
    let show = ctl_at(&url, &["dlq", "show", "1"]).await.expect(0);
    let text = &show.stdout;
    assert!(text.contains(&format!("ce-id: {event_id}")), "{text}");
    assert!(
        text.contains("ce-type: jetmart.order.v1.OrderPlaced"),
        "{text}"
    );
    assert!(
        text.contains(&format!("jetmart-dlq-error: {REFUSAL}")),
        "{text}"
    );
    assert!(text.contains("jetmart-dlq-consumer: svc"), "{text}");
    assert!(text.contains("stream         ORDER #1"), "{text}");
    assert!(
        text.contains("payload (jetmart.order.v1.OrderPlaced"),
        "{text}"
    );
    assert!(text.contains("\"order_id\": \"o-1\""), "{text}");

    // Fix the cause, replay: handled once, and the dead-letter stream is empty.
    broken.store(false, Ordering::SeqCst);
    let replay = ctl_at(&url, &["dlq", "replay", "1"]).await.expect(0);
    assert!(
        replay
            .stdout
            .contains("replayed dead letter 1 to order.placed.o-1"),
        "{}",
        replay.stdout
    );
    assert!(
        replay.stdout.contains(&format!("replay:{event_id}")),
        "{}",
        replay.stdout
    );
    wait_until("the replay is handled", Duration::from_secs(30), || {
        let pool = pool.clone();
        async move { count(&pool, "SELECT count(*) FROM effects").await == 1 }
    })
    .await;
    let list = ctl_at(&url, &["dlq", "list"]).await.expect(0);
    assert!(rows(&list.stdout).is_empty(), "{}", list.stdout);
    assert!(list.stdout.contains("no dead letters"), "{}", list.stdout);
    assert_eq!(messages(&js, DEADLETTER.name).await, 0);
    assert_eq!(
        messages(&js, ORDER.name).await,
        2,
        "the original and one replay"
    );

    // The same dead letter again: it is gone.
    let again = ctl_at(&url, &["dlq", "replay", "1"]).await.expect(1);
    assert!(
        again.stderr.contains("dead letter 1 not found"),
        "{}",
        again.stderr
    );

    // A second copy of the same dead letter (a crash between republish and delete, or a second
    // operator): JetStream drops the republish as a duplicate within its window.
    dead_letter(&js, "svc", 101, &event, None).await;
    let dup = ctl_at(&url, &["dlq", "replay", "2"]).await.expect(0);
    assert!(dup.stdout.contains("already replayed"), "{}", dup.stdout);
    assert_eq!(
        messages(&js, ORDER.name).await,
        2,
        "no new message in ORDER"
    );
    assert_eq!(messages(&js, DEADLETTER.name).await, 0);

    // Past JetStream's window (here: a different replay id), the consumer's processed record
    // still makes a repeat harmless: delivered and acknowledged, no second effect.
    let mut later = event.clone();
    later
        .headers
        .insert("jetmart-replay-count".into(), "1".into());
    dead_letter(&js, "svc", 102, &later, None).await;
    let third = ctl_at(&url, &["dlq", "replay", "3"]).await.expect(0);
    assert!(
        third.stdout.contains(&format!("replay:{event_id}:2")),
        "{}",
        third.stdout
    );
    assert_eq!(messages(&js, ORDER.name).await, 3);
    let stream = js.get_stream(ORDER.name).await.unwrap();
    wait_until(
        "the repeat is acknowledged",
        Duration::from_secs(30),
        || {
            let stream = stream.clone();
            async move {
                let mut c: async_nats::jetstream::consumer::PullConsumer =
                    stream.get_consumer("svc").await.unwrap();
                let info = c.info().await.unwrap();
                info.ack_floor.stream_sequence >= 3 && info.num_ack_pending == 0
            }
        },
    )
    .await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM effects").await,
        1,
        "exactly once"
    );
    assert_eq!(messages(&js, DEADLETTER.name).await, 0);

    shutdown.cancel();
    runner.await.unwrap().unwrap();
}

#[tokio::test]
async fn unknown_ids_are_not_found_and_undecodable_payloads_are_dumped() {
    let nats = NatsServer::start().await.unwrap();
    let url = nats.url();
    let js = async_nats::jetstream::new(nats.client().await.unwrap());

    // Before any stream exists.
    let none = ctl_at(&url, &["dlq", "show", "5"]).await.expect(1);
    assert!(
        none.stderr.contains("dead letter 5 not found"),
        "{}",
        none.stderr
    );
    let empty = ctl_at(&url, &["dlq", "list"]).await.expect(0);
    assert!(empty.stdout.contains("no dead letters"), "{}", empty.stdout);

    provision::ensure_streams(&js, &[ORDER, DEADLETTER], &StreamSettings::default())
        .await
        .unwrap();
    let missing = ctl_at(&url, &["dlq", "show", "999999"]).await.expect(1);
    assert_eq!(
        missing.stderr.trim(),
        "jetmartctl: dead letter 999999 not found"
    );
    assert!(missing.stdout.is_empty(), "{}", missing.stdout);
    let missing = ctl_at(&url, &["dlq", "replay", "999999"]).await.expect(1);
    assert!(
        missing.stderr.contains("dead letter 999999 not found"),
        "{}",
        missing.stderr
    );

    let event = placed("o-garbled");
    dead_letter(&js, "svc", 4, &event, Some(b"\xff\xfe garbled")).await;
    let show = ctl_at(&url, &["dlq", "show", "1"]).await.expect(0);
    assert!(
        show.stdout
            .contains("not decoded: does not decode as jetmart.order.v1.OrderPlaced"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout.contains("00000000  ff fe 20 67"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout.contains("text: \\xff\\xfe garbled"),
        "{}",
        show.stdout
    );
}

#[tokio::test]
async fn filters_replay_all_purge_and_streams() {
    let nats = NatsServer::start().await.unwrap();
    let url = nats.url();
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    provision::ensure_streams(&js, &[ORDER, DEADLETTER], &StreamSettings::default())
        .await
        .unwrap();
    for (i, (consumer, order)) in [("a", "o-a1"), ("a", "o-a2"), ("b", "o-b1")]
        .iter()
        .enumerate()
    {
        dead_letter(&js, consumer, i as u64 + 1, &placed(order), None).await;
    }

    let a = ctl_at(&url, &["dlq", "list", "--consumer", "a"])
        .await
        .expect(0);
    let a_rows = rows(&a.stdout);
    assert_eq!(a_rows.len(), 2, "{}", a.stdout);
    assert!(a_rows.iter().all(|r| r[2] == "a"), "{}", a.stdout);
    let b = ctl_at(
        &url,
        &["dlq", "list", "--subject-filter", "order.placed.o-b1"],
    )
    .await
    .expect(0);
    assert_eq!(rows(&b.stdout).len(), 1, "{}", b.stdout);
    assert_eq!(rows(&b.stdout)[0][0], "3", "{}", b.stdout);
    let limited = ctl_at(&url, &["dlq", "list", "--limit", "1"])
        .await
        .expect(0);
    assert_eq!(rows(&limited.stdout).len(), 1, "{}", limited.stdout);
    assert!(limited.stdout.contains("... 2 more"), "{}", limited.stdout);

    // A durable consumer, to see what `streams` says about it.
    provision::ensure_consumer(&js, &consumer_spec("svc"))
        .await
        .unwrap();

    let all_a = ctl_at(&url, &["dlq", "replay", "--all", "--consumer", "a"])
        .await
        .expect(0);
    assert!(
        all_a
            .stdout
            .contains("replayed 2, already replayed (dropped by JetStream) 0, failed 0"),
        "{}",
        all_a.stdout
    );
    assert_eq!(messages(&js, ORDER.name).await, 2);
    assert_eq!(messages(&js, DEADLETTER.name).await, 1, "b's is left");

    let streams = ctl_at(&url, &["streams"]).await.expect(0);
    let s = &streams.stdout;
    assert!(s.contains("ORDER  messages 2"), "{s}");
    assert!(s.contains("DEADLETTER  messages 1"), "{s}");
    let svc = s
        .lines()
        .find(|l| l.trim_start().starts_with("svc "))
        .unwrap_or_else(|| panic!("{s}"));
    let cols: Vec<&str> = svc.split_whitespace().collect();
    assert_eq!(
        &cols[1..4],
        ["2", "0", "0"],
        "pending, ack pending, redelivered: {s}"
    );
    let per_b = s
        .lines()
        .skip_while(|l| !l.starts_with("per service"))
        .find(|l| l.starts_with("b "))
        .unwrap_or_else(|| panic!("{s}"));
    assert_eq!(
        per_b.split_whitespace().nth(4),
        Some("1"),
        "b's dead letters: {s}"
    );

    // Purge: refused without a terminal, then by consumer, then all.
    let refused = ctl_at(&url, &["dlq", "purge"]).await.expect(1);
    assert!(refused.stderr.contains("pass --yes"), "{}", refused.stderr);
    assert_eq!(messages(&js, DEADLETTER.name).await, 1);
    for (seq, order) in [(10, "o-c1"), (11, "o-c2")] {
        dead_letter(&js, "c", seq, &placed(order), None).await;
    }
    let purged = ctl_at(&url, &["dlq", "purge", "--consumer", "b", "--yes"])
        .await
        .expect(0);
    assert!(
        purged.stdout.contains("purged 1 dead letter "),
        "{}",
        purged.stdout
    );
    assert_eq!(messages(&js, DEADLETTER.name).await, 2);
    let purged = ctl_at(&url, &["dlq", "purge", "--yes"]).await.expect(0);
    assert!(
        purged.stdout.contains("purged 2 dead letters"),
        "{}",
        purged.stdout
    );
    assert_eq!(messages(&js, DEADLETTER.name).await, 0);
    let nothing = ctl_at(&url, &["dlq", "purge", "--yes"]).await.expect(0);
    assert!(
        nothing.stdout.contains("nothing to purge"),
        "{}",
        nothing.stdout
    );

    // At a terminal it asks: "n" keeps them, "y" deletes them.
    for (seq, order) in [(20, "o-d1"), (21, "o-d2")] {
        dead_letter(&js, "d", seq, &placed(order), None).await;
    }
    let args = ["--nats-url", url.as_str(), "dlq", "purge"];
    let kept = ctl_on_terminal(&args, "n\n").await.expect(1);
    assert!(
        kept.stdout
            .contains("Delete 2 dead letters (deadletter.>) for good?"),
        "{}",
        kept.stdout
    );
    assert!(
        kept.stdout.contains("not confirmed; nothing deleted"),
        "{}",
        kept.stdout
    );
    assert_eq!(messages(&js, DEADLETTER.name).await, 2);
    let gone = ctl_on_terminal(&args, "y\n").await.expect(0);
    assert!(
        gone.stdout.contains("purged 2 dead letters"),
        "{}",
        gone.stdout
    );
    assert_eq!(messages(&js, DEADLETTER.name).await, 0);
}

#[tokio::test]
async fn misuse_is_a_usage_error_and_help_explains() {
    let usage = |args: &'static [&'static str]| async move {
        let run = ctl(args).await.expect(2);
        assert!(
            run.stderr.contains("Usage:") || run.stderr.contains("try '--help'"),
            "{args:?}: {}",
            run.stderr
        );
        run
    };
    usage(&[]).await;
    let dlq = usage(&["dlq"]).await;
    assert!(dlq.stderr.contains("jetmartctl dlq"), "{}", dlq.stderr);
    let abc = usage(&["dlq", "show", "abc"]).await;
    assert!(abc.stderr.contains("invalid value 'abc'"), "{}", abc.stderr);
    usage(&["dlq", "show"]).await;
    usage(&["dlq", "replay"]).await;
    usage(&["dlq", "replay", "1", "--all"]).await;
    usage(&["dlq", "replay", "1", "--consumer", "a"]).await;
    usage(&["dlq", "list", "--consumer", "a.b"]).await;
    usage(&["frobnicate"]).await;
    usage(&["smoke", "--order-url", "order:50051"]).await;
    usage(&["smoke", "--order-url", "http://o:1", "--timeout", "soon"]).await;

    let help = ctl(&["--help"]).await.expect(0);
    assert!(help.stdout.contains("Exit status"), "{}", help.stdout);
    assert!(help.stdout.contains("2  usage error"), "{}", help.stdout);
    let replay = ctl(&["dlq", "replay", "--help"]).await.expect(0);
    for needle in [
        "Nats-Msg-Id",
        "replay:<ce-id>",
        "Every consumer of that subject",
        "ce-id",
        "jetmartctl dlq replay --all",
    ] {
        assert!(
            replay.stdout.contains(needle),
            "{needle}: {}",
            replay.stdout
        );
    }

    // Not misuse, but a failure: NATS is not there.
    let down = ctl(&["--nats-url", "nats://127.0.0.1:1", "dlq", "list"])
        .await
        .expect(1);
    assert!(
        down.stderr.contains("cannot connect to NATS"),
        "{}",
        down.stderr
    );
}
