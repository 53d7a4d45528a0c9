//! Running the built `jetmartctl` as a user would, and reading streams for assertions.

#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream;

/// What one run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with everything printed unless the exit code is `code`.
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// `jetmartctl <args>` with no NATS settings from the environment and stdin closed.
pub async fn ctl(args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_jetmartctl"));
    for var in [
        "NATS_URL",
        "NATS_CREDS_FILE",
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_TLS_CA_FILE",
        "ORDER_DATABASE_URL",
        "ANALYTICS_REDIS_URL",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        cmd.args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("jetmartctl finished within 120 s")
    .expect("jetmartctl runs");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    // JETMARTCTL_ECHO=1 (with --nocapture) prints every run, to see what users see.
    if std::env::var_os("JETMARTCTL_ECHO").is_some() {
        println!(
            "$ jetmartctl {}\n{}{}[exit {}]\n",
            args.join(" "),
            run.stdout,
            run.stderr,
            run.code
        );
    }
    run
}

/// `jetmartctl <args>` on a pseudo-terminal (util-linux `script`), typing `input`: what an
/// operator at a terminal does. Output is the terminal's (stdout and stderr together).
pub async fn ctl_on_terminal(args: &[&str], input: &str) -> Run {
    use tokio::io::AsyncWriteExt;
    let line = std::iter::once(env!("CARGO_BIN_EXE_jetmartctl"))
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = tokio::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("NATS_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("util-linux script runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("finished within 60 s")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `jetmartctl --nats-url <url> <args>`
pub async fn ctl_at(nats_url: &str, args: &[&str]) -> Run {
    let mut all = vec!["--nats-url", nats_url];
    all.extend_from_slice(args);
    ctl(&all).await
}

pub async fn messages(js: &jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

/// Rows of a `dlq list` (the header and notes left out), split on whitespace.
pub fn rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("SEQ"))
        .skip(1)
        .filter(|l| !l.starts_with("..."))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}
