//! 3-node JetStream cluster: an R3 stream keeps working through the loss of a node.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use jetmart_testkit::NatsCluster;

/// Publishes with retries: while a stream elects a new leader a publish can time out, and a
/// real publisher retries (the Nats-Msg-Id keeps it exactly-once).
async fn publish_retrying(js: &jetstream::Context, subject: &str, id: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let headers = {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Msg-Id", id);
            h
        };
        let attempt = async {
            js.publish_with_headers(subject.to_owned(), headers, id.to_owned().into())
                .await?
                .await
                .map_err(async_nats::Error::from)
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(ack)) => return ack.sequence,
            Ok(Err(e)) if Instant::now() < deadline => eprintln!("publish {id}: {e}; retrying"),
            Err(_) if Instant::now() < deadline => eprintln!("publish {id}: timed out; retrying"),
            other => panic!("publish {id} kept failing: {other:?}"),
        }
        // Poll interval while the stream elects a leader.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn r3_stream_survives_losing_its_leader() {
    let cluster = NatsCluster::start(3).await.expect("start cluster");
    assert_eq!(cluster.len(), 3);
    assert_eq!(cluster.urls().split(',').count(), 3);
    assert_eq!(cluster.node_name(2), "n2");

    let client = cluster.client().await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js
        .create_stream(stream::Config {
            name: "ORDER".to_owned(),
            subjects: vec!["order.>".to_owned()],
            num_replicas: 3,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create R3 stream");
    for i in 0..5 {
        publish_retrying(&js, &format!("order.placed.{i}"), &format!("before-{i}")).await;
    }
    let info = stream.info().await.unwrap().clone();
    let cluster_info = info.cluster.expect("clustered stream");
    assert_eq!(cluster_info.replicas.len(), 2, "R3 = leader + 2 replicas");
    let leader = cluster_info.leader.expect("stream leader");
    let victim = (0..3)
        .find(|&i| cluster.node_name(i) == leader)
        .expect("leader is one of ours");

    cluster.kill_node(victim);
    assert_eq!(cluster.node_pid(victim), None);

    // The other two elect a new leader and keep taking writes.
    for i in 0..5 {
        publish_retrying(
            &js,
            &format!("order.placed.{}", 5 + i),
            &format!("during-{i}"),
        )
        .await;
    }
    let mut stream = js.get_stream("ORDER").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 10);

    cluster.restart_node(victim).await.expect("restart node");
    cluster
        .wait_stream_current("ORDER", Duration::from_secs(60))
        .await
        .expect("restarted node catches up");

    // It is part of the stream's peer set again, and current.
    let info = stream.info().await.unwrap().clone();
    let ci = info.cluster.unwrap();
    let name = cluster.node_name(victim);
    let rejoined = ci.leader.as_deref() == Some(name)
        || ci
            .replicas
            .iter()
            .any(|p| p.name == name && p.current && !p.offline);
    assert!(rejoined, "{name} did not rejoin: {ci:?}");

    // Reading through the restarted node sees every message.
    let js_victim = jetstream::new(cluster.node_client(victim).await.unwrap());
    let stream_via_victim = js_victim.get_stream("ORDER").await.unwrap();
    let last = stream_via_victim.get_raw_message(10).await.unwrap();
    assert_eq!(&last.payload[..], b"during-4");
}
