//! The read model after Redis lost its data, against real NATS and Redis: whatever dies or is
//! flushed during the recovery, the dashboard comes back to exactly what the streams hold and
//! never shows a generation that lacks history.

mod common;

use std::time::Duration;

use common::{
    SCENARIO_EVENTS, WAIT, content, publish_placed, publish_scenario, scenario_start, start,
    with_more_placed,
};
use jetmart_analytics::rebuild::{self, Progress, RebuildError, RebuildOptions};
use jetmart_proto::analytics::v1 as pb;

/// Waits until the dashboard shows `expected`; on the way, every snapshot must be either the
/// empty one (no read model yet) or hold at least the scenario's orders: never a generation
/// that counts only part of the history.
async fn converges_to(s: &common::Running, expected: &pb::Dashboard) {
    let want_placed = expected.orders.as_ref().unwrap().placed;
    let mut partial = Vec::new();
    let mut last = None;
    let reached = tokio::time::timeout(WAIT, async {
        loop {
            let d = content(&s.dashboard().await);
            let placed = d.orders.as_ref().unwrap().placed;
            if d.revision != 0 && placed < 7 {
                partial.push((d.revision, placed));
            }
            if &d == expected {
                return;
            }
            last = Some((d.revision, placed));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "the read model did not converge to {} events, {want_placed} placed; last seen (revision, placed): {last:?}",
        expected.revision
    );
    assert!(
        partial.is_empty(),
        "partial read models were shown (revision, placed): {partial:?}"
    );
}

fn flush(url: &str) {
    // Synchronous on purpose: it must happen at this exact point of the rebuild.
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    redis::cmd("FLUSHALL").exec(&mut conn).unwrap();
}

/// The long chaos run's failure (issue 20): Redis is flushed, the replica that starts the
/// recovery rebuild is killed right after it started, and live counting goes on. The read model
/// must still come back complete, instead of a generation that only counts from the flush on.
#[tokio::test]
async fn a_rebuild_that_dies_after_a_flush_leaves_no_partial_read_model() {
    let s = start().await;
    let t0 = scenario_start();
    publish_scenario(&s, t0).await;
    s.wait_revision(SCENARIO_EVENTS).await;
    s.wait_drained().await;
    let before = content(&s.dashboard().await);

    let options = RebuildOptions {
        lock_ttl: Duration::from_secs(2),
        ..Default::default()
    };
    // Flush, then start a rebuild and drop it (what SIGKILL does to the replica running it) at
    // its first progress report. Retried in the rare case the service's own recovery got to
    // the empty Redis first (then this would not be the rebuild that starts the recovery).
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts <= 5, "never got to start the recovery rebuild");
        s.redis_server.flushall().await.unwrap();
        let (tx, mut started) = tokio::sync::oneshot::channel();
        let mut tx = Some(tx);
        let rebuild = rebuild::rebuild(&s.js, &s.redis, &options, |p| {
            if let Progress::Started { previous, .. } = p
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(*previous);
            }
        });
        tokio::select! {
            biased;
            previous = &mut started => {
                // 0: no read model; 1: the empty one an older rebuild created on the spot.
                if previous.unwrap() <= 1 {
                    break;
                }
            }
            result = rebuild => match result {
                Err(RebuildError::Busy) => {}
                other => panic!("the rebuild should have been killed first: {other:?}"),
            },
        }
        // Let the service's recovery finish before flushing again.
        s.wait_revision(SCENARIO_EVENTS).await;
    }

    // Orders keep coming while the read model is missing and the dead rebuild's lease runs out.
    const MORE: i64 = 25;
    publish_placed(&s, MORE, t0).await;
    converges_to(&s, &with_more_placed(&before, MORE, t0)).await;
    s.wait_drained().await;
    assert_eq!(
        content(&s.dashboard().await),
        with_more_placed(&before, MORE, t0)
    );
    s.shutdown.cancel();
}

/// Redis flushed while a rebuild replays (its keyspace loses what it replayed), and right after
/// a rebuild swapped generations: neither may leave a partial read model behind.
#[tokio::test]
async fn a_flush_during_a_rebuild_or_right_after_its_swap_is_recovered() {
    let s = start().await;
    let t0 = scenario_start();
    publish_scenario(&s, t0).await;
    s.wait_revision(SCENARIO_EVENTS).await;
    s.wait_drained().await;
    let mut expected = content(&s.dashboard().await);
    let url = s.redis_server.url();
    let options = RebuildOptions {
        lock_ttl: Duration::from_secs(2),
        ..Default::default()
    };

    // During the replay: after the first stream is replayed.
    let mut flushed = false;
    let result = rebuild::rebuild(&s.js, &s.redis, &options, |p| {
        if matches!(p, Progress::Replaying { .. }) && !flushed {
            flushed = true;
            flush(&url);
        }
    })
    .await;
    assert!(flushed);
    assert!(
        matches!(result, Err(RebuildError::LeaseLost)),
        "a rebuild that lost part of its keyspace must not swap it in: {result:?}"
    );
    publish_placed(&s, 10, t0).await;
    expected = with_more_placed(&expected, 10, t0);
    converges_to(&s, &expected).await;
    s.wait_drained().await;

    // Right after the swap: the new generation is gone before its catch-up and sweep.
    let mut flushed = false;
    let result = rebuild::rebuild(&s.js, &s.redis, &options, |p| {
        if matches!(p, Progress::Swapped { .. }) && !flushed {
            flushed = true;
            flush(&url);
        }
    })
    .await;
    assert!(flushed);
    println!("rebuild flushed after its swap: {result:?}");
    publish_placed(&s, 10, t0).await;
    expected = with_more_placed(&expected, 10, t0);
    converges_to(&s, &expected).await;
    s.wait_drained().await;
    assert_eq!(content(&s.dashboard().await), expected);
    s.shutdown.cancel();
}
