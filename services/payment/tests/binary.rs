//! The binary's process contract: bad settings exit 64 naming the setting; `migrate` exits 0.

use std::process::Command;

fn payment() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jetmart-payment"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    c
}

#[test]
fn bad_settings_exit_64_naming_the_setting() {
    let cases = [
        (
            vec![("PAYMENT_SIMULATED_FAILURE_RATE", "2")],
            "PAYMENT_SIMULATED_FAILURE_RATE",
        ),
        (vec![("PAYMENT_GATEWAY", "stripe")], "stripe"),
        (
            vec![("PAYMENT_RETRY_MAX_ATTEMPTS", "0")],
            "retry-max-attempts",
        ),
        (
            vec![("PAYMENT_SIMULATED_DECLINE_TOKENS", "tok=MAYBE")],
            "simulated-decline-tokens",
        ),
        (
            vec![
                ("PAYMENT_RETRY_BASE_DELAY_MS", "900"),
                ("PAYMENT_RETRY_MAX_DELAY_MS", "100"),
            ],
            "PAYMENT_RETRY_BASE_DELAY_MS",
        ),
    ];
    for (env, named) in cases {
        let out = payment()
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .envs(env.clone())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{env:?}: {stderr}");
        assert!(stderr.contains(named), "{env:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    let out = payment().output().unwrap();
    assert_eq!(out.status.code(), Some(64), "DATABASE_URL is required");
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_creates_the_tables_and_exits_0() {
    let db = jetmart_testkit::fresh_database().await.unwrap();
    let url = db.url().to_owned();
    for _ in 0..2 {
        let out = tokio::task::spawn_blocking({
            let url = url.clone();
            move || {
                payment()
                    .env("DATABASE_URL", url)
                    .env("LOG_FORMAT", "text")
                    .arg("migrate")
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pool = db.pool().await.unwrap();
    for table in [
        "payments",
        "payment_gateway_attempts",
        "jetmart_outbox",
        "jetmart_processed",
    ] {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = $1",
        )
        .bind(table)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(n, 1, "{table}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn http_status(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    body.lines().next().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_becomes_ready_and_drains_on_sigterm() {
    let nats = jetmart_testkit::NatsServer::start().await.unwrap();
    let db = jetmart_testkit::fresh_database().await.unwrap();
    let (grpc, http) = (free_port(), free_port());
    let mut child = tokio::process::Command::from(payment())
        .env("NATS_URL", nats.url())
        .env("DATABASE_URL", db.url())
        .env("GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .env("HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if http_status(http, "/readyz")
            .await
            .is_some_and(|l| l.contains(" 200 "))
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        assert!(child.try_wait().unwrap().is_none(), "exited early");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(std::time::Duration::from_secs(25), child.wait())
        .await
        .expect("exits within the drain deadline")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
