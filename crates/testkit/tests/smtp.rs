//! SMTP sink: messages are recorded; TempFail/Reject answer 4xx/5xx; stop/restart on the same port.

use std::time::Duration;

use jetmart_testkit::{SmtpMode, SmtpSink};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn transport(sink: &SmtpSink) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(sink.port())
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

fn message(id: &str, to: &str) -> Message {
    Message::builder()
        .message_id(Some(format!("<{id}@jetmart.test>")))
        .from("Jetmart <noreply@jetmart.test>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject(format!("Order {id} confirmed"))
        .body(format!(
            "Thanks for order {id}.\nhttps://survey.jetmart.test/s/{id}\n"
        ))
        .unwrap()
}

/// Minimal SMTP client: returns the reply code of each command.
async fn raw_exchange(port: u16, commands: &[&str]) -> Vec<u16> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut stream = BufReader::new(stream);
    let mut codes = vec![read_reply(&mut stream).await];
    for command in commands {
        stream
            .get_mut()
            .write_all(command.as_bytes())
            .await
            .unwrap();
        stream.get_mut().write_all(b"\r\n").await.unwrap();
        codes.push(read_reply(&mut stream).await);
    }
    codes
}

async fn read_reply(stream: &mut BufReader<tokio::net::TcpStream>) -> u16 {
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        assert!(line.len() >= 4, "short reply {line:?}");
        // Multi-line replies continue with "250-".
        if line.as_bytes()[3] != b'-' {
            return line[..3].parse().unwrap();
        }
    }
}

#[tokio::test]
async fn records_what_it_receives() {
    let sink = SmtpSink::start().await.expect("start sink");
    assert_eq!(sink.url(), format!("smtp://127.0.0.1:{}", sink.port()));
    assert!(sink.messages().is_empty());

    let mailer = transport(&sink);
    mailer
        .send(message("o-1", "Ann <ann@example.test>"))
        .await
        .expect("send 1");
    mailer
        .send(message("o-2", "bob@example.test"))
        .await
        .expect("send 2");

    let got = sink.wait_for(2, Duration::from_secs(10)).await.unwrap();
    assert_eq!(got.len(), 2);
    let first = &got[0];
    assert_eq!(first.message_id.as_deref(), Some("<o-1@jetmart.test>"));
    assert_eq!(first.message_id_bare(), Some("o-1@jetmart.test"));
    assert_eq!(first.subject.as_deref(), Some("Order o-1 confirmed"));
    assert_eq!(
        first.from.as_deref(),
        Some("Jetmart <noreply@jetmart.test>")
    );
    assert_eq!(first.to, vec!["Ann <ann@example.test>"]);
    assert_eq!(first.envelope_from, "noreply@jetmart.test");
    assert_eq!(first.envelope_to, vec!["ann@example.test"]);
    assert!(
        first.text.contains("https://survey.jetmart.test/s/o-1"),
        "{}",
        first.text
    );
    assert!(first.raw.starts_with(b"From: ") || first.raw.windows(11).any(|w| w == b"Message-ID:"));
    assert_eq!(
        got[1].message_id.as_deref(),
        Some("<o-2@jetmart.test>"),
        "arrival order"
    );
    assert!(first.file.starts_with(sink.maildir().join("new")));

    sink.clear().unwrap();
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn tempfail_and_reject_modes() {
    let sink = SmtpSink::start().await.unwrap();
    let mailer = transport(&sink);

    sink.set_mode(SmtpMode::TempFail).unwrap();
    let err = mailer
        .send(message("t-1", "a@example.test"))
        .await
        .expect_err("tempfail");
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.status().map(u16::from), Some(451));
    let codes = raw_exchange(
        sink.port(),
        &[
            "EHLO t",
            "MAIL FROM:<a@x.test>",
            "RCPT TO:<b@x.test>",
            "QUIT",
        ],
    )
    .await;
    assert_eq!(codes, [220, 250, 250, 451, 221]);

    sink.set_mode(SmtpMode::Reject).unwrap();
    let err = mailer
        .send(message("r-1", "a@example.test"))
        .await
        .expect_err("reject");
    assert!(err.is_permanent(), "{err}");
    assert_eq!(err.status().map(u16::from), Some(550));

    sink.set_mode(SmtpMode::TempFailOnData).unwrap();
    let codes = raw_exchange(
        sink.port(),
        &[
            "EHLO t",
            "MAIL FROM:<a@x.test>",
            "RCPT TO:<b@x.test>",
            "DATA",
            "Subject: x\r\n\r\nbody\r\n.",
            "QUIT",
        ],
    )
    .await;
    assert_eq!(codes, [220, 250, 250, 250, 354, 451, 221]);

    sink.set_mode(SmtpMode::RejectOnData).unwrap();
    let err = mailer
        .send(message("r-2", "a@example.test"))
        .await
        .expect_err("reject on data");
    assert_eq!(err.status().map(u16::from), Some(550));

    assert!(sink.messages().is_empty(), "nothing refused is recorded");

    sink.set_mode(SmtpMode::Accept).unwrap();
    mailer
        .send(message("a-1", "a@example.test"))
        .await
        .expect("accepted again");
    let got = sink.wait_for(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message_id.as_deref(), Some("<a-1@jetmart.test>"));
}

#[tokio::test]
async fn stop_and_restart_on_the_same_port() {
    let sink = SmtpSink::start().await.unwrap();
    let port = sink.port();
    let mailer = transport(&sink);
    mailer.send(message("s-1", "a@example.test")).await.unwrap();
    sink.wait_for(1, Duration::from_secs(10)).await.unwrap();

    sink.stop();
    assert_eq!(sink.pid(), None);
    let err = transport(&sink)
        .send(message("s-2", "a@example.test"))
        .await
        .expect_err("relay down");
    assert!(
        err.status().is_none(),
        "a connection error, not an SMTP reply: {err}"
    );

    sink.restart().await.unwrap();
    assert_eq!(sink.port(), port);
    transport(&sink)
        .send(message("s-3", "a@example.test"))
        .await
        .expect("relay back");
    let got = sink.wait_for(2, Duration::from_secs(10)).await.unwrap();
    let ids: Vec<_> = got.iter().filter_map(|m| m.message_id.clone()).collect();
    assert_eq!(
        ids,
        ["<s-1@jetmart.test>", "<s-3@jetmart.test>"],
        "maildir kept across restart"
    );
}

#[tokio::test]
async fn records_the_auth_login_and_wait_for_times_out() {
    let sink = SmtpSink::start().await.unwrap();
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(sink.port())
        .credentials(Credentials::new("notification".into(), "secret".into()))
        .build();
    mailer
        .send(message("auth-1", "a@example.test"))
        .await
        .expect("send with auth");
    let got = sink.wait_for(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(got[0].auth_login.as_deref(), Some("notification"));

    let err = sink
        .wait_for(2, Duration::from_millis(200))
        .await
        .expect_err("only one message");
    assert!(err.to_string().contains("got 1"), "{err}");
}

#[tokio::test]
async fn start_in_keeps_a_readable_maildir() {
    let dir = std::env::temp_dir().join(format!("jetmart-testkit-devsink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    {
        let sink = SmtpSink::start_in(&dir, port).await.expect("start_in");
        transport(&sink)
            .send(message("dev-1", "a@example.test"))
            .await
            .unwrap();
        sink.wait_for(1, Duration::from_secs(10)).await.unwrap();
    }
    // The process is gone but the maildir stays, one plain RFC 5322 file per message.
    let files: Vec<_> = std::fs::read_dir(dir.join("maildir/new"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    assert!(
        text.starts_with("X-Jetmart-Envelope-From: noreply@jetmart.test\r\n"),
        "{text}"
    );
    assert!(text.contains("Message-ID: <dev-1@jetmart.test>"));
    assert!(dir.join("smtp_sink.py").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}
