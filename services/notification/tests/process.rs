//! The `jetmart-notification` binary as a process: bad settings exit 64 naming the setting, and
//! a real run logs no email address and no SMTP password, then drains on SIGTERM and exits 0.

use std::process::Stdio;
use std::time::Duration;

use jetmart_proto::common::v1::{Money, OrderLine};
use jetmart_proto::order::v1::OrderConfirmed;
use jetmart_runtime::OutgoingEvent;
use jetmart_testkit::{NatsServer, SmtpMode, SmtpSink, pg, wait_until};
use tokio::io::AsyncReadExt;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_jetmart-notification");
const PASSWORD: &str = "pw-Never-Logged-42";

fn base_env(cmd: &mut std::process::Command) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", "postgres://u@127.0.0.1:1/n")
        .env("SMTP_URL", "smtp://127.0.0.1:1025");
}

#[test]
fn bad_settings_exit_64_with_one_line_naming_the_setting() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("SMTP_URL", "http://mail:25")], "SMTP_URL"),
        (&[("SMTP_URL", "smtp://user:pw@mail:25")], "SMTP_URL"),
        (&[("SMTP_STARTTLS", "maybe")], "SMTP_STARTTLS"),
        (&[("SMTP_USERNAME", "mailer")], "SMTP_PASSWORD"),
        (&[("SMTP_PASSWORD", PASSWORD)], "SMTP_USERNAME"),
        (&[("SMTP_FROM", "nobody")], "SMTP_FROM"),
        (&[("SMTP_TIMEOUT_SECS", "0")], "SMTP_TIMEOUT_SECS"),
    ];
    for (env, setting) in cases {
        let mut cmd = std::process::Command::new(BIN);
        base_env(&mut cmd);
        for (k, v) in *env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{env:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        let named = stderr.contains(setting)
            || stderr.contains(&format!("--{}", setting.to_lowercase().replace('_', "-")));
        assert!(named, "{env:?} should name {setting}: {stderr}");
        assert!(!stderr.contains(PASSWORD), "{stderr}");
    }
    let mut cmd = std::process::Command::new(BIN);
    base_env(&mut cmd);
    cmd.env_remove("SMTP_URL");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SMTP_URL"));

    // --help shows the variables, never their values.
    let mut cmd = std::process::Command::new(BIN);
    base_env(&mut cmd);
    cmd.env("SMTP_PASSWORD", PASSWORD).arg("--help");
    let out = cmd.output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        help.contains("SMTP_PASSWORD") && !help.contains(PASSWORD),
        "{help}"
    );
}

#[tokio::test]
async fn logs_redact_addresses_and_never_show_the_password_then_sigterm_drains() {
    let nats = NatsServer::start().await.unwrap();
    let db = pg::fresh_database().await.unwrap();
    let smtp = SmtpSink::start().await.unwrap();
    smtp.set_mode(SmtpMode::TempFail).unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .env("NATS_URL", nats.url())
        .env("DATABASE_URL", db.url())
        .env("SMTP_URL", smtp.url())
        .env("SMTP_USERNAME", "mailer")
        .env("SMTP_PASSWORD", PASSWORD)
        .env("GRPC_ADDR", "127.0.0.1:0")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env(
            "RUST_LOG",
            "info,jetmart_notification=debug,jetmart_runtime=debug",
        )
        .env("SHUTDOWN_DEADLINE_SECS", "10")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let js = nats.jetstream().await.unwrap();
    wait_until("ORDER stream provisioned", Duration::from_secs(60), || {
        let js = js.clone();
        async move { js.get_stream("ORDER").await.is_ok() }
    })
    .await;
    let publish = |email: &'static str| {
        let js = js.clone();
        async move {
            let order = OrderConfirmed {
                order_id: Uuid::now_v7().to_string(),
                customer_id: "cust-1".into(),
                customer_email: email.into(),
                lines: vec![OrderLine {
                    sku: "SKU-1".into(),
                    quantity: 1,
                    unit_price: Some(Money {
                        amount_minor: 100,
                        currency: "EUR".into(),
                    }),
                }],
                total: Some(Money {
                    amount_minor: 100,
                    currency: "EUR".into(),
                }),
                ..Default::default()
            };
            let e = OutgoingEvent::new("order", &order.order_id, &order);
            js.send_publish(
                e.subject.clone(),
                async_nats::jetstream::message::PublishMessage::build()
                    .headers(e.nats_headers())
                    .payload(e.payload.clone()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    };
    // A retried send (logged by the runner), a rejected one, an accepted one.
    publish("temporary.trouble@example.com").await;
    let pool = db.pool().await.unwrap();
    wait_until("a retry", Duration::from_secs(60), || {
        let js = js.clone();
        async move {
            let s = js.get_stream("ORDER").await.unwrap();
            match s.consumer_info("notification").await {
                Ok(info) => info.delivered.consumer_sequence >= 2,
                Err(_) => false,
            }
        }
    })
    .await;
    smtp.set_mode(SmtpMode::Reject).unwrap();
    wait_until("the rejection recorded", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM notifications WHERE status = 'failed'",
            )
            .fetch_one(&pool)
            .await
            .is_ok_and(|n| n == 1)
        }
    })
    .await;
    smtp.set_mode(SmtpMode::Accept).unwrap();
    publish("happy.customer@example.com").await;
    smtp.wait_for(1, Duration::from_secs(60)).await.unwrap();

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits within the shutdown deadline")
        .unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    let logs = format!("{out}{err}");
    assert!(logs.contains("email sent"), "{logs}");
    assert!(logs.contains("email failed for good"), "{logs}");
    assert!(logs.contains("will retry"), "{logs}");
    assert!(
        logs.contains("h***@example.com"),
        "redacted form is logged: {logs}"
    );
    for secret in [
        "temporary.trouble@",
        "happy.customer@",
        "emporary.trouble",
        "appy.customer",
        PASSWORD,
    ] {
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the logs:\n{logs}"
        );
    }
}
