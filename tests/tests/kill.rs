//! Kill tests with real NATS and Postgres: a relay, a consumer and a batching consumer
//! SIGKILLed at their most delicate moment, and a service SIGTERMed under load. The victim is this test binary
//! re-executed in a child role, so the kill is a real process death. Runs without libtest
//! (harness = false) so a child can take a role.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use jetmart_e2e::fixtures::*;
use jetmart_runtime::consumer::{ConsumerRunner, PgProcessor, RunnerConfig};
use jetmart_runtime::envelope::header;
use jetmart_runtime::metrics::{HandledLabels, Outcome, RuntimeMetrics};
use jetmart_runtime::outbox::{Relay, RelayConfig};
use jetmart_testkit::child;
use jetmart_testkit::{NatsServer, pg};
use tokio_util::sync::CancellationToken;

fn main() {
    if let Some(role) = child::role() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(run_role(&role));
        panic!("role {role}: the failpoint did not kill the process");
    }
    child::run_scenarios(
        "crash",
        &[
            (
                "relay killed after publishing, before marking; NATS down a while",
                || Box::pin(relay_killed_and_nats_outage()),
            ),
            ("consumer killed after commit, before ack", || {
                Box::pin(consumer_killed_after_commit())
            }),
            (
                "batching consumer killed after a batch commit, before its acks",
                || Box::pin(batch_killed_after_commit()),
            ),
            (
                "SIGTERM under load drains and exits 0 within the deadline",
                || Box::pin(sigterm_under_load()),
            ),
        ],
    );
}

async fn connect() -> (sqlx::PgPool, async_nats::jetstream::Context) {
    let pool = sqlx::PgPool::connect(&std::env::var("DATABASE_URL").unwrap())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(
        async_nats::connect(std::env::var("NATS_URL").unwrap())
            .await
            .unwrap(),
    );
    (pool, js)
}

async fn run_role(role: &str) {
    let (pool, js) = connect().await;
    match role {
        "relay" => {
            let config = RelayConfig {
                crash_after_publish: true,
                ..Default::default()
            };
            let r = Relay::new(pool, js, config, RuntimeMetrics::unregistered())
                .round()
                .await;
            panic!("relay round returned {r:?}");
        }
        "consumer" => {
            let mut config = RunnerConfig::new(consumer_spec("svc"));
            config.crash_after_effect = 1;
            run_victim(pool, js, config).await;
        }
        "batch-consumer" => {
            let mut config = RunnerConfig::new(consumer_spec("svc"));
            config.lanes = 1;
            config.batch = 32;
            // Dies only after a real batch, not after a lone first event.
            config.crash_after_effect = 2;
            run_victim(pool, js, config).await;
        }
        "service" => {
            // A service as the kit runs one: consumer and relay under one drain deadline.
            let shutdown = jetmart_kit::shutdown::on_signal();
            let metrics = RuntimeMetrics::unregistered();
            let mut tasks = jetmart_kit::Tasks::new();
            let mut config = RunnerConfig::new(consumer_spec("svc"));
            config.lanes = 8;
            let mut handler = EffectHandler::new("draining", &pool);
            handler.work = SIMULATED_WORK;
            let runner = ConsumerRunner::new(
                js.clone(),
                config,
                PgProcessor::new(pool.clone(), handler),
                metrics.clone(),
            );
            tasks.spawn("consumer", runner.run(shutdown.clone()));
            let relay = Relay::new(pool, js, RelayConfig::default(), metrics);
            let late = tasks.late_token();
            tasks.spawn_late("relay", async move {
                relay.run(late).await;
                Ok::<(), std::convert::Infallible>(())
            });
            let code = match tasks.run(shutdown, DRAIN_DEADLINE).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("service: {e}");
                    1
                }
            };
            std::process::exit(code);
        }
        other => panic!("unknown role {other}"),
    }
}

const SIMULATED_WORK: Duration = Duration::from_millis(40);
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// A consumer whose failpoint kills this process after a commit, before the acks.
async fn run_victim(pool: sqlx::PgPool, js: async_nats::jetstream::Context, config: RunnerConfig) {
    let handler = EffectHandler::new("victim", &pool);
    let _ = ConsumerRunner::new(
        js,
        config,
        PgProcessor::new(pool, handler),
        RuntimeMetrics::unregistered(),
    )
    .run(CancellationToken::new())
    .await;
}

fn child_env(nats: &NatsServer, db: &pg::TestDatabase) -> [(&'static str, String); 2] {
    [
        ("DATABASE_URL", db.url().to_string()),
        ("NATS_URL", nats.url().to_string()),
    ]
}

async fn killed_child(role: &str, nats: &NatsServer, db: &pg::TestDatabase) {
    let status = child::spawn(role, &child_env(nats, db))
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the {role} child must die by SIGKILL, got {status:?}"
    );
}

async fn relay_killed_and_nats_outage() {
    let nats = NatsServer::start().await.unwrap();
    let db = pg::fresh_database().await.unwrap();
    let pool = db.pool().await.unwrap();
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    prepare(&pool, &js).await;

    // Three aggregates, interleaved, one transaction per event.
    let aggregates = ["a", "b", "c"];
    let mut expected: HashMap<&str, Vec<String>> = HashMap::new();
    let mut write = |from: usize, to: usize| {
        let mut batch = Vec::new();
        for _ in from..to {
            for a in aggregates {
                let e = placed(a);
                expected.entry(a).or_default().push(e.id.to_string());
                batch.push(e);
            }
        }
        batch
    };
    for e in write(0, 20) {
        enqueue(&pool, &[e]).await;
    }

    // The child publishes one round (one event per aggregate) and dies before marking it.
    killed_child("relay", &nats, &db).await;
    let stored = js
        .get_stream("ORDER")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(stored, 3, "the killed relay did publish");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM jetmart_outbox WHERE published_at IS NULL"
        )
        .await,
        60,
        "nothing marked"
    );

    // NATS goes away; more events commit meanwhile; a new relay cannot publish and keeps trying.
    nats.kill();
    for e in write(20, 25) {
        enqueue(&pool, &[e]).await;
    }
    let metrics = RuntimeMetrics::unregistered();
    let config = RelayConfig {
        retry_max: Duration::from_millis(300),
        publish_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(
        Relay::new(pool.clone(), js.clone(), config, metrics.clone()).run(shutdown.clone()),
    );
    wait_until(
        "relay failing while NATS is down",
        Duration::from_secs(20),
        || async { metrics.outbox_round_failures.get() >= 2 },
    )
    .await;
    nats.restart().await.unwrap();
    wait_until("outbox empty", Duration::from_secs(30), || async {
        count(
            &pool,
            "SELECT count(*) FROM jetmart_outbox WHERE published_at IS NULL",
        )
        .await
            == 0
    })
    .await;
    shutdown.cancel();
    relay.await.unwrap();

    let messages = read_stream(&js, "ORDER").await;
    let ids: Vec<String> = messages
        .iter()
        .map(|m| header(m, header::ID).unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 75, "every event in the stream");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 75, "exactly once");
    for a in aggregates {
        let seen: Vec<String> = messages
            .iter()
            .filter(|m| header(m, header::SUBJECT) == Some(a))
            .map(|m| header(m, header::ID).unwrap().to_owned())
            .collect();
        assert_eq!(&seen, &expected[a], "aggregate {a} in order");
    }
    assert!(
        metrics.outbox_deduplicated.get() >= 3,
        "the re-sent round was dropped by JetStream as duplicates"
    );
}

async fn consumer_killed_after_commit() {
    let nats = NatsServer::start().await.unwrap();
    let db = pg::fresh_database().await.unwrap();
    let pool = db.pool().await.unwrap();
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    prepare(&pool, &js).await;
    let first = placed("o-1");
    publish(&js, &first).await;

    killed_child("consumer", &nats, &db).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM effects").await,
        1,
        "the effect committed before the kill"
    );

    // A new replica: the unacked message comes back after ack_wait and is recognised.
    let second = placed("o-2");
    publish(&js, &second).await;
    let metrics = RuntimeMetrics::unregistered();
    let shutdown = CancellationToken::new();
    let runner = ConsumerRunner::new(
        js.clone(),
        RunnerConfig::new(consumer_spec("svc")),
        PgProcessor::new(pool.clone(), EffectHandler::new("survivor", &pool)),
        metrics.clone(),
    );
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let outcome = |o: Outcome| {
        metrics
            .handled
            .get_or_create(&HandledLabels {
                consumer: "svc".into(),
                event_type: first.event_type().into(),
                outcome: o,
            })
            .get()
    };
    wait_until(
        "redelivery seen as duplicate",
        Duration::from_secs(20),
        || async { outcome(Outcome::Duplicate) == 1 && outcome(Outcome::Applied) == 1 },
    )
    .await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM effects").await,
        2,
        "one effect per event"
    );
    let victim: i64 = count(
        &pool,
        "SELECT count(*) FROM effects WHERE instance = 'victim'",
    )
    .await;
    assert_eq!(victim, 1);
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

async fn batch_killed_after_commit() {
    let nats = NatsServer::start().await.unwrap();
    let db = pg::fresh_database().await.unwrap();
    let pool = db.pool().await.unwrap();
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    prepare(&pool, &js).await;
    // One aggregate, so every event goes to the one lane and queues there.
    let events: Vec<_> = (0..40).map(|_| placed("o-1")).collect();
    for e in &events {
        publish(&js, e).await;
    }

    killed_child("batch-consumer", &nats, &db).await;
    // Lone events before the batch were acked; the batch committed as one transaction and died.
    let victim = count(
        &pool,
        "SELECT count(*) FROM effects WHERE tx = (SELECT max(tx) FROM effects)",
    )
    .await;
    assert!(victim >= 2, "a batch committed before the kill: {victim}");
    // Lone events before that batch were acked by the victim and never come back.
    let acked = count(&pool, "SELECT count(*) FROM effects").await - victim;
    eprintln!("  the victim acked {acked} lone events, then committed {victim} in one batch");

    let metrics = RuntimeMetrics::unregistered();
    let shutdown = CancellationToken::new();
    let mut config = RunnerConfig::new(consumer_spec("svc"));
    config.batch = 32;
    let runner = ConsumerRunner::new(
        js.clone(),
        config,
        PgProcessor::new(pool.clone(), EffectHandler::new("survivor", &pool)),
        metrics.clone(),
    );
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let outcome = |o: Outcome| {
        metrics
            .handled
            .get_or_create(&HandledLabels {
                consumer: "svc".into(),
                event_type: events[0].event_type().into(),
                outcome: o,
            })
            .get()
    };
    wait_until(
        "every event handled, the victim's batch as duplicates",
        Duration::from_secs(30),
        || async {
            outcome(Outcome::Applied) + outcome(Outcome::Duplicate)
                == (events.len() as i64 - acked) as u64
        },
    )
    .await;
    assert_eq!(outcome(Outcome::Duplicate), victim as u64);
    assert_eq!(
        count(&pool, "SELECT count(DISTINCT event_id) FROM effects").await,
        events.len() as i64,
        "every event has its effect"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM effects").await,
        events.len() as i64,
        "and only one"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

async fn sigterm_under_load() {
    let nats = NatsServer::start().await.unwrap();
    let db = pg::fresh_database().await.unwrap();
    let pool = db.pool().await.unwrap();
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    prepare(&pool, &js).await;
    let n = 300;
    for i in 0..n {
        publish(&js, &placed(&format!("o-{i}"))).await;
    }
    let mut service = child::spawn("service", &child_env(&nats, &db)).unwrap();
    wait_until("service under way", Duration::from_secs(30), || async {
        count(&pool, "SELECT count(*) FROM effects").await >= 40
    })
    .await;

    let pid = service.id().unwrap().to_string();
    let asked = std::time::Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(DRAIN_DEADLINE * 2, service.wait())
        .await
        .expect("service exited")
        .unwrap();
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(0), "graceful exit, got {status:?}");
    assert!(
        took <= DRAIN_DEADLINE,
        "exited within the drain deadline ({took:?})"
    );

    let done_by_child = count(
        &pool,
        "SELECT count(*) FROM effects WHERE instance = 'draining'",
    )
    .await;
    assert!(
        done_by_child < n,
        "the signal came under load ({done_by_child} of {n} done)"
    );
    let abandoned = count(
        &pool,
        "SELECT count(*) FROM started s WHERE NOT EXISTS (SELECT 1 FROM effects e WHERE e.event_id = s.event_id)",
    )
    .await;
    assert_eq!(
        abandoned, 0,
        "every event the service had started was finished"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM jetmart_outbox WHERE published_at IS NULL"
        )
        .await,
        0,
        "the outbox was flushed before exit"
    );

    // A replacement replica takes the rest: nothing lost, nothing doubled.
    let shutdown = CancellationToken::new();
    let metrics = RuntimeMetrics::unregistered();
    let runner = ConsumerRunner::new(
        js.clone(),
        RunnerConfig::new(consumer_spec("svc")),
        PgProcessor::new(pool.clone(), EffectHandler::new("replacement", &pool)),
        metrics.clone(),
    );
    let consumer = tokio::spawn(runner.run(shutdown.clone()));
    let relay = tokio::spawn(
        Relay::new(pool.clone(), js.clone(), RelayConfig::default(), metrics).run(shutdown.clone()),
    );
    wait_until("every event handled", Duration::from_secs(60), || async {
        count(&pool, "SELECT count(*) FROM effects").await == n
            && count(
                &pool,
                "SELECT count(*) FROM jetmart_outbox WHERE published_at IS NULL",
            )
            .await
                == 0
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    relay.await.unwrap();
    assert_eq!(
        count(&pool, "SELECT count(DISTINCT event_id) FROM effects").await,
        n
    );
    let confirmed: Vec<_> = read_stream(&js, "ORDER")
        .await
        .into_iter()
        .filter(|m| m.subject.starts_with("order.confirmed."))
        .map(|m| header(&m, header::CAUSATION_ID).unwrap().to_owned())
        .collect();
    assert_eq!(confirmed.len() as i64, n, "one outgoing event per effect");
    assert_eq!(confirmed.iter().collect::<HashSet<_>>().len() as i64, n);
}
