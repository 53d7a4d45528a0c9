//! Consumer runner against real NATS and Postgres: replicas share one durable consumer, poison
//! goes to the dead-letter stream, unknown types are acknowledged, batches commit together and
//! fall back to one event at a time on failure.

use std::sync::atomic::Ordering;
use std::time::Duration;

use jetmart_e2e::fixtures::*;
use jetmart_runtime::consumer::{ConsumerRunner, PgProcessor, RunnerConfig};
use jetmart_runtime::deadletter;
use jetmart_runtime::envelope::header;
use jetmart_runtime::metrics::{HandledLabels, Outcome, RuntimeMetrics};
use jetmart_testkit::{NatsServer, pg};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn two_replicas_share_one_durable_consumer_and_handle_each_event_once() {
    let nats = NatsServer::start().await.unwrap();
    let db = pg::fresh_database().await.unwrap();
    let pool = db.pool().await.unwrap();
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    prepare(&pool, &js).await;

    let shutdown = CancellationToken::new();
    let handlers = [
        EffectHandler::new("a", &pool),
        EffectHandler::new("b", &pool),
    ];
    for h in &handlers {
        let mut config = RunnerConfig::new(consumer_spec("svc"));
        config.lanes = 4;
        let runner = ConsumerRunner::new(
            js.clone(),
            config,
            PgProcessor::new(pool.clone(), h.clone()),
            RuntimeMetrics::unregistered(),
        );
        tokio::spawn(runner.run(shutdown.clone()));
    }
    let n = 300;
    for i in 0..n {
        publish(&js, &placed(&format!("o-{i}"))).await;
    }
    wait_until("all effects", Duration::from_secs(30), || async {
        count(&pool, "SELECT count(*) FROM effects").await == n
    })
    .await;
    shutdown.cancel();

    assert_eq!(
        count(&pool, "SELECT count(DISTINCT event_id) FROM effects").await,
        n,
        "each event once"
    );
    let (a, b) = (
        handlers[0].handled.load(Ordering::Relaxed),
        handlers[1].handled.load(Ordering::Relaxed),
    );
    assert_eq!(a + b, n as usize);
    assert!(a > 0 && b > 0, "both replicas got work: a={a} b={b}");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM jetmart_processed").await,
        n
    );
    // Their outgoing events are in the outbox, one per effect.
    assert_eq!(count(&pool, "SELECT count(*) FROM jetmart_outbox").await, n);
}

#[tokio::test]
async fn poison_goes_to_the_dead_letter_stream_and_later_messages_still_flow() {
    let nats = NatsServer::start().await.unwrap();
    let db = pg::fresh_database().await.unwrap();
    let pool = db.pool().await.unwrap();
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    prepare(&pool, &js).await;
    let metrics = RuntimeMetrics::unregistered();
    let shutdown = CancellationToken::new();
    let runner = ConsumerRunner::new(
        js.clone(),
        RunnerConfig::new(consumer_spec("svc")),
        PgProcessor::new(pool.clone(), EffectHandler::new("a", &pool)),
        metrics.clone(),
    );
    let task = tokio::spawn(runner.run(shutdown.clone()));

    // 1. No envelope at all.
    js.publish("order.placed.garbage", "\u{1}not protobuf".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // 2. A valid envelope around a payload that is not an OrderPlaced.
    let mut bad_payload = placed("bad-payload");
    bad_payload.payload = bytes::Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]);
    publish(&js, &bad_payload).await;
    // 3. A handler that refuses for good.
    let refused = placed("perm-1");
    publish(&js, &refused).await;
    // 4. An event type nobody here knows (forward compatibility): acked, not dead-lettered.
    let mut unknown = placed("unknown-1");
    unknown.headers.insert(
        header::TYPE.into(),
        "jetmart.order.v2.OrderPlacedWithGiftWrap".into(),
    );
    publish(&js, &unknown).await;
    // 5. Good messages after the poison.
    for i in 0..10 {
        publish(&js, &placed(&format!("good-{i}"))).await;
    }

    wait_until("good effects", Duration::from_secs(20), || async {
        count(&pool, "SELECT count(*) FROM effects").await == 10
    })
    .await;
    wait_until("three dead letters", Duration::from_secs(20), || async {
        stream_len(&js, "DEADLETTER").await == 3
    })
    .await;
    // Lanes run concurrently, so the letters may arrive in any order: sort them by subject.
    let mut letters = read_stream(&js, "DEADLETTER").await;
    let rank = |m: &async_nats::jetstream::Message| {
        ["garbage", "bad-payload", "perm-1"]
            .iter()
            .position(|s| m.subject.ends_with(s))
    };
    letters.sort_by_key(rank);
    let reasons: Vec<_> = letters
        .iter()
        .map(|m| header(m, deadletter::header::REASON).unwrap().to_owned())
        .collect();
    // A payload that is not what its ce-type names is undecodable too, not a handler refusal.
    assert_eq!(reasons, ["undecodable", "undecodable", "permanent"]);
    assert_eq!(
        letters[0].subject.as_str(),
        "deadletter.svc.order.placed.garbage"
    );
    assert!(
        header(&letters[0], deadletter::header::ERROR)
            .unwrap()
            .contains("no headers")
    );
    assert_eq!(
        letters[0].payload.as_ref(),
        b"\x01not protobuf",
        "payload kept as it was"
    );
    assert!(
        header(&letters[1], deadletter::header::ERROR)
            .unwrap()
            .contains("cannot decode")
    );
    assert_eq!(
        header(&letters[2], header::ID),
        Some(refused.id.to_string().as_str()),
        "original headers kept"
    );
    assert!(
        header(&letters[2], deadletter::header::ERROR)
            .unwrap()
            .contains("refusal list")
    );
    assert_eq!(
        header(&letters[2], deadletter::header::DELIVERED),
        Some("1")
    );
    assert_eq!(
        header(&letters[2], deadletter::header::STREAM),
        Some("ORDER")
    );

    let ignored = metrics
        .handled
        .get_or_create(&HandledLabels {
            consumer: "svc".into(),
            event_type: "jetmart.order.v2.OrderPlacedWithGiftWrap".into(),
            outcome: Outcome::Ignored,
        })
        .get();
    assert_eq!(ignored, 1, "unknown type counted");
    // Nothing is left un-acked on the consumer.
    wait_until("consumer drained", Duration::from_secs(10), || async {
        let mut c: async_nats::jetstream::consumer::PullConsumer = js
            .get_stream("ORDER")
            .await
            .unwrap()
            .get_consumer("svc")
            .await
            .unwrap();
        let info = c.info().await.unwrap();
        info.num_pending == 0 && info.num_ack_pending == 0
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn transient_failures_retry_then_dead_letter_past_the_delivery_limit() {
    let nats = NatsServer::start().await.unwrap();
    let db = pg::fresh_database().await.unwrap();
    let pool = db.pool().await.unwrap();
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    prepare(&pool, &js).await;
    // The effect table disappears: every attempt fails transiently.
    sqlx::query("ALTER TABLE effects RENAME TO effects_away")
        .execute(&pool)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let mut config = RunnerConfig::new(consumer_spec("svc"));
    config.max_deliver = 3;
    config.retry_initial = Duration::from_millis(20);
    let metrics = RuntimeMetrics::unregistered();
    let runner = ConsumerRunner::new(
        js.clone(),
        config,
        PgProcessor::new(pool.clone(), EffectHandler::new("a", &pool)),
        metrics.clone(),
    );
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let e = placed("o-1");
    publish(&js, &e).await;
    wait_until("dead letter", Duration::from_secs(20), || async {
        stream_len(&js, "DEADLETTER").await == 1
    })
    .await;
    let letters = read_stream(&js, "DEADLETTER").await;
    assert_eq!(
        header(&letters[0], deadletter::header::REASON),
        Some("max_deliver")
    );
    assert_eq!(
        header(&letters[0], deadletter::header::DELIVERED),
        Some("3")
    );
    assert!(
        header(&letters[0], deadletter::header::ERROR)
            .unwrap()
            .contains("effects")
    );
    let retried = metrics
        .handled
        .get_or_create(&HandledLabels {
            consumer: "svc".into(),
            event_type: e.event_type().into(),
            outcome: Outcome::Retried,
        })
        .get();
    assert_eq!(retried, 2);
    // The failed attempts rolled back: nothing recorded as processed, nothing in the outbox.
    assert_eq!(
        count(&pool, "SELECT count(*) FROM jetmart_processed").await,
        0
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM jetmart_outbox").await, 0);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_duplicate_delivery_has_no_second_effect() {
    let nats = NatsServer::start().await.unwrap();
    let db = pg::fresh_database().await.unwrap();
    let pool = db.pool().await.unwrap();
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    prepare(&pool, &js).await;
    let e = placed("o-1");
    publish(&js, &e).await;
    // The same event again under another Nats-Msg-Id, as a second publisher would send it.
    let mut again = e.clone();
    again
        .headers
        .insert(header::NATS_MSG_ID.into(), "other".into());
    publish(&js, &again).await;
    let metrics = RuntimeMetrics::unregistered();
    let shutdown = CancellationToken::new();
    let runner = ConsumerRunner::new(
        js.clone(),
        RunnerConfig::new(consumer_spec("svc")),
        PgProcessor::new(pool.clone(), EffectHandler::new("a", &pool)),
        metrics.clone(),
    );
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let dup = || {
        metrics
            .handled
            .get_or_create(&HandledLabels {
                consumer: "svc".into(),
                event_type: e.event_type().into(),
                outcome: Outcome::Duplicate,
            })
            .get()
    };
    wait_until("duplicate seen", Duration::from_secs(10), || async {
        dup() == 1
    })
    .await;
    assert_eq!(count(&pool, "SELECT count(*) FROM effects").await, 1);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_backlog_is_applied_in_batches_and_a_failing_event_fails_alone() {
    let nats = NatsServer::start().await.unwrap();
    let db = pg::fresh_database().await.unwrap();
    let pool = db.pool().await.unwrap();
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    prepare(&pool, &js).await;

    // A backlog before the consumer starts, so its lanes fill: good events, three that the
    // handler refuses for good, and copies of good events under other Nats-Msg-Ids.
    let mut good = Vec::new();
    let mut refused = Vec::new();
    for i in 0..240 {
        let e = if i % 80 == 40 {
            let e = placed(&format!("perm-{i}"));
            refused.push(e.id);
            e
        } else {
            let e = placed(&format!("o-{}", i % 60));
            good.push(e.id);
            e
        };
        publish(&js, &e).await;
        if i % 50 == 7 {
            let mut again = e.clone();
            again.headers.insert(
                header::NATS_MSG_ID.into(),
                format!("copy-{i}").as_str().into(),
            );
            publish(&js, &again).await;
        }
    }
    let copies = (0..240).filter(|i| i % 50 == 7).count() as u64;

    let metrics = RuntimeMetrics::unregistered();
    let shutdown = CancellationToken::new();
    let mut config = RunnerConfig::new(consumer_spec("svc"));
    config.lanes = 2;
    config.batch = 32;
    let runner = ConsumerRunner::new(
        js.clone(),
        config,
        PgProcessor::new(pool.clone(), EffectHandler::new("a", &pool)),
        metrics.clone(),
    );
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let n = good.len() as i64;
    wait_until("every good effect", Duration::from_secs(30), || async {
        count(&pool, "SELECT count(*) FROM effects").await == n
    })
    .await;
    wait_until(
        "refused ones dead-lettered",
        Duration::from_secs(20),
        || async { stream_len(&js, "DEADLETTER").await == refused.len() as u64 },
    )
    .await;

    assert_eq!(
        count(&pool, "SELECT count(DISTINCT event_id) FROM effects").await,
        n,
        "each good event once"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM jetmart_processed").await,
        n
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM jetmart_outbox").await, n);
    // Batches that met a refused event were redone one event at a time; the rest shared.
    let transactions = count(&pool, "SELECT count(DISTINCT tx) FROM effects").await;
    let largest = count(
        &pool,
        "SELECT max(c) FROM (SELECT count(*) AS c FROM effects GROUP BY tx) t",
    )
    .await;
    assert!(
        transactions < n && largest >= 8,
        "{n} effects in {transactions} transactions, at most {largest} in one"
    );
    // Events of one aggregate were applied in stream order (one lane per aggregate).
    let applied: Vec<(String, uuid::Uuid)> =
        sqlx::query_as("SELECT aggregate_id, event_id FROM effects ORDER BY applied_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    let position = |id: &uuid::Uuid| good.iter().position(|g| g == id).unwrap();
    let mut last_seen = std::collections::HashMap::new();
    for (aggregate, id) in &applied {
        let at = position(id);
        if let Some(before) = last_seen.insert(aggregate.clone(), at) {
            assert!(before < at, "{aggregate}: applied out of stream order");
        }
    }

    let letters = read_stream(&js, "DEADLETTER").await;
    let mut ids: Vec<String> = letters
        .iter()
        .map(|m| header(m, header::ID).unwrap().to_owned())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = refused.iter().map(|id| id.to_string()).collect();
    expected.sort();
    assert_eq!(ids, expected, "only the refused events are dead letters");
    for m in &letters {
        assert_eq!(header(m, deadletter::header::REASON), Some("permanent"));
    }
    let outcome = |o: Outcome| {
        metrics
            .handled
            .get_or_create(&HandledLabels {
                consumer: "svc".into(),
                event_type: "jetmart.order.v1.OrderPlaced".into(),
                outcome: o,
            })
            .get()
    };
    wait_until("copies counted", Duration::from_secs(10), || async {
        outcome(Outcome::Duplicate) == copies
    })
    .await;
    assert_eq!(outcome(Outcome::Applied), n as u64);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
