//! Single-node NATS: JetStream round trip, kill/restart keeps file-stored messages.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use jetmart_testkit::NatsServer;

async fn create_orders_stream(js: &jetstream::Context) -> stream::Stream {
    js.create_stream(stream::Config {
        name: "ORDER".to_owned(),
        subjects: vec!["order.>".to_owned()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create stream")
}

async fn publish(js: &jetstream::Context, subject: &str, payload: &str) -> u64 {
    js.publish(subject.to_owned(), payload.to_owned().into())
        .await
        .expect("publish")
        .await
        .expect("publish ack")
        .sequence
}

#[tokio::test]
async fn jetstream_round_trip() {
    let nats = NatsServer::start().await.expect("start nats");
    assert!(nats.url().starts_with("nats://127.0.0.1:"));
    assert_ne!(nats.port(), 4222, "never the machine's own server");

    let js = nats.jetstream().await.unwrap();
    let stream = create_orders_stream(&js).await;
    assert_eq!(publish(&js, "order.placed.o-1", "first").await, 1);
    assert_eq!(publish(&js, "order.placed.o-2", "second").await, 2);

    let msg = stream.get_raw_message(2).await.expect("get message 2");
    assert_eq!(msg.subject.as_str(), "order.placed.o-2");
    assert_eq!(&msg.payload[..], b"second");

    // And through a durable pull consumer, as services read.
    use futures::StreamExt;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("analytics".to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(2).messages().await.unwrap();
    let mut payloads = Vec::new();
    while let Some(m) = batch.next().await {
        let m = m.unwrap();
        payloads.push(String::from_utf8(m.payload.to_vec()).unwrap());
        m.ack().await.unwrap();
    }
    assert_eq!(payloads, ["first", "second"]);
}

#[tokio::test]
async fn kill_and_restart_keep_file_stored_messages() {
    let nats = NatsServer::start().await.unwrap();
    let port = nats.port();
    let first_pid = nats.pid().expect("running");
    {
        let js = nats.jetstream().await.unwrap();
        create_orders_stream(&js).await;
        for i in 1..=5 {
            publish(&js, &format!("order.placed.o-{i}"), &format!("payload-{i}")).await;
        }
    }

    nats.kill();
    assert_eq!(nats.pid(), None);
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "port must refuse connections while the server is down"
    );

    nats.restart().await.expect("restart");
    assert_eq!(nats.port(), port, "same port after restart");
    assert_ne!(nats.pid(), Some(first_pid));

    let js = nats.jetstream().await.unwrap();
    let mut stream = js.get_stream("ORDER").await.expect("stream survived");
    assert_eq!(stream.info().await.unwrap().state.messages, 5);
    let msg = stream.get_raw_message(3).await.unwrap();
    assert_eq!(&msg.payload[..], b"payload-3");
    // Still writable.
    assert_eq!(publish(&js, "order.placed.o-6", "after restart").await, 6);
}

#[tokio::test]
async fn stop_then_restart_and_extra_config() {
    let nats = NatsServer::start_with_config("max_payload: 4KB")
        .await
        .unwrap();
    let client = nats.client().await.unwrap();
    assert_eq!(client.server_info().max_payload, 4 * 1024);
    drop(client);

    nats.stop();
    assert_eq!(nats.pid(), None);
    nats.restart().await.unwrap();
    let client = nats.client().await.unwrap();
    // Core NATS request/reply works after the restart.
    let mut sub = client.subscribe("ping").await.unwrap();
    client.publish("ping", "x".into()).await.unwrap();
    use futures::StreamExt;
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got.payload[..], b"x");
}

#[tokio::test]
async fn servers_are_independent() {
    let (a, b) = tokio::join!(NatsServer::start(), NatsServer::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.store_dir(), b.store_dir());
    let ja = a.jetstream().await.unwrap();
    create_orders_stream(&ja).await;
    let jb = b.jetstream().await.unwrap();
    assert!(
        jb.get_stream("ORDER").await.is_err(),
        "b has no stream of a"
    );
    let store = a.store_dir().to_path_buf();
    drop(a);
    assert!(!store.exists(), "store dir removed on drop");
}
