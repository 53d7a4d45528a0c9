//! The kit's NATS connection authenticates with the configured user and password against a
//! real nats-server that requires them.

use std::time::Duration;

use clap::Parser;
use jetmart_kit::CommonArgs;
use jetmart_testkit::NatsServer;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

/// `anon` is what the testkit's readiness probe connects as (no credentials); it may only ask
/// JetStream whether it is up. `order` may publish its own subjects.
const USERS: &str = r#"
authorization {
  users: [
    {user: order, password: "s3cret", permissions: {publish: ["order.>", "_INBOX.>"], subscribe: ["_INBOX.>"]}},
    {user: anon, password: "unused", permissions: {publish: ["$JS.API.INFO", "_INBOX.>"], subscribe: ["_INBOX.>"]}}
  ]
}
no_auth_user: anon
"#;

fn args(url: &str, user: &str, password: &str) -> CommonArgs {
    Args::try_parse_from([
        "t",
        "--nats-url",
        url,
        "--nats-user",
        user,
        "--nats-password",
        password,
    ])
    .unwrap()
    .common
}

#[tokio::test]
async fn connects_with_user_and_password_and_is_refused_with_a_wrong_one() {
    let nats = NatsServer::start_with_config(USERS).await.unwrap();
    let good = jetmart_kit::nats::connect("order", &args(&nats.url(), "order", "s3cret"))
        .await
        .unwrap();
    jetmart_testkit::wait_until("authenticated connection", Duration::from_secs(10), || {
        let c = good.clone();
        async move { c.connection_state() == async_nats::connection::State::Connected }
    })
    .await;
    good.publish("order.placed.x", "ok".into()).await.unwrap();
    good.flush().await.unwrap();

    // The first connection is retried in the background, so a wrong password shows as a client
    // that never becomes connected (and so a service that never becomes ready).
    let bad = jetmart_kit::nats::connect("order", &args(&nats.url(), "order", "wrong"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        assert_ne!(
            bad.connection_state(),
            async_nats::connection::State::Connected,
            "a wrong password must not connect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
