//! The checker and the chaos tools reach NATS with a URL that may carry credentials (the chart's
//! admin user: nats://admin:<password>@localhost:4222); the connection must authenticate with
//! them. Against a real nats-server with users.

use std::time::Duration;

use jetmart_check::nats::connect;
use jetmart_testkit::nats::NatsServer;

/// `anon` (what a client without credentials becomes) may not use `secret.>`; `admin` may.
const USERS: &str = r#"
authorization {
  users: [
    {user: admin, password: "adm1n-pw"},
    {user: anon, password: "unused", permissions: {publish: {deny: ["secret.>"]}, subscribe: {deny: ["secret.>"]}}}
  ]
}
no_auth_user: anon
"#;

async fn can_use_secret_subjects(client: &async_nats::Client) -> bool {
    let Ok(mut sub) = client.subscribe("secret.probe").await else {
        return false;
    };
    let _ = client.flush().await;
    let _ = client.publish("secret.probe", "x".into()).await;
    let _ = client.flush().await;
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_secs(2), sub.next())
        .await
        .ok()
        .flatten()
        .is_some()
}

#[tokio::test]
async fn credentials_in_the_nats_url_are_used() {
    let server = NatsServer::start_with_config(USERS).await.unwrap();
    let port = server.port();

    let anon = connect(&format!("nats://127.0.0.1:{port}")).await.unwrap();
    assert!(
        !can_use_secret_subjects(&anon).await,
        "the probe must tell the users apart"
    );

    let admin = connect(&format!("nats://admin:adm1n-pw@127.0.0.1:{port}"))
        .await
        .expect("connecting with the URL's credentials");
    assert!(
        can_use_secret_subjects(&admin).await,
        "connected with credentials in the URL, but not as admin"
    );

    let wrong = connect(&format!("nats://admin:wrong@127.0.0.1:{port}")).await;
    assert!(wrong.is_err(), "a wrong password in the URL was accepted");
}

/// Why `jetmart_check::nats::connect` exists: async-nats 0.51 on its own (and so
/// `jetmart_check::connect_nats`) connects without the URL's credentials. When this starts to
/// fail, async-nats sends them itself and the workaround (and docs/kubernetes.md's known gap)
/// can go.
#[tokio::test]
async fn async_nats_alone_ignores_url_credentials() {
    let server = NatsServer::start_with_config(USERS).await.unwrap();
    let port = server.port();
    let plain = async_nats::connect(format!("nats://admin:adm1n-pw@127.0.0.1:{port}"))
        .await
        .unwrap();
    assert!(
        !can_use_secret_subjects(&plain).await,
        "async-nats now authenticates with the URL's credentials"
    );
}
