//! `jetmart-stack` as a user runs it: the real binary with every service binary and real NATS,
//! Postgres, Redis and SMTP servers. A terminal's Ctrl-C is SIGINT to the whole foreground
//! process group, so the tests run the stack in a process group of its own and signal that
//! group with killpg. Needs the service binaries beside the stack's (`cargo build --workspace
//! --bins`; `cargo test --workspace` builds them).
#![allow(unsafe_code)] // kill(2) and killpg(2): signals to the stack and its services

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jetmart_testkit::wait_until;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SERVICES: [&str; 6] = [
    "order",
    "inventory",
    "payment",
    "notification",
    "survey",
    "analytics",
];
/// Start-up of six services plus the servers on a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// A service as the stack reported it: its ports and pid.
#[derive(Debug, Clone, Copy)]
struct Reported {
    http: u16,
    pid: i32,
}

struct Stack {
    child: Child,
    pgid: i32,
    out: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
}

impl Stack {
    /// Starts `jetmart-stack` (no demo, any free ports) as the leader of a new process group.
    async fn start(extra: &[&str]) -> Stack {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_jetmart-stack"));
        for s in SERVICES {
            let service = bin.with_file_name(format!("jetmart-{s}"));
            assert!(
                service.is_file(),
                "{} is missing: run `cargo build --workspace --bins` first",
                service.display()
            );
        }
        let dir = std::env::temp_dir().join(format!("jetmart-stack-test-{}", uuid::Uuid::now_v7()));
        let mut cmd = Command::new(&bin);
        cmd.args([
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--demo",
            "false",
            "--dir",
        ])
        .arg(&dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
        let mut child = cmd.spawn().expect("starting jetmart-stack");
        let pgid = child.id().expect("pid") as i32;
        let out = Arc::new(Mutex::new(Vec::new()));
        let lines = out.clone();
        let stdout = child.stdout.take().expect("stdout");
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                println!("stack| {line}");
                lines.lock().unwrap().push(line);
            }
        });
        Stack {
            child,
            pgid,
            out,
            dir,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    fn has_line(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.out.lock().unwrap().iter().any(|l| pred(l))
    }

    /// Waits until every service is ready; their ports and pids as printed.
    async fn ready(&mut self) -> BTreeMap<&'static str, Reported> {
        let out = self.out.clone();
        wait_until("every service ready", START_TIMEOUT, || {
            let out = out.clone();
            async move {
                let lines = out.lock().unwrap();
                SERVICES
                    .iter()
                    .all(|s| lines.iter().any(|l| ready_line(l, s).is_some()))
                    || lines.iter().any(|l| l.starts_with("start failed"))
            }
        })
        .await;
        let lines = self.lines();
        assert!(
            !lines.iter().any(|l| l.starts_with("start failed")),
            "the stack did not start:\n{}",
            lines.join("\n")
        );
        SERVICES
            .iter()
            .map(|s| (*s, lines.iter().find_map(|l| ready_line(l, s)).unwrap()))
            .collect()
    }

    /// SIGINT to the whole process group, as a terminal's Ctrl-C.
    fn ctrl_c(&self) {
        // SAFETY: killpg(2) has no memory-safety preconditions; the group is the stack's own.
        let r = unsafe { libc::killpg(self.pgid, libc::SIGINT) };
        assert_eq!(r, 0, "killpg: {}", std::io::Error::last_os_error());
    }

    async fn exit(&mut self, timeout: Duration) -> ExitStatus {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "jetmart-stack still running {timeout:?} after Ctrl-C:\n{}",
                    self.lines().join("\n")
                )
            })
            .unwrap()
    }

    /// Asserts that the stack printed a clean exit (status 0) for every service.
    fn assert_every_service_exited_0(&self) {
        let lines = self.lines();
        let stopping = lines
            .iter()
            .position(|l| l == "stopping...")
            .unwrap_or_else(|| panic!("no 'stopping...':\n{}", lines.join("\n")));
        for s in SERVICES {
            let status = lines[stopping..]
                .iter()
                .find_map(|l| {
                    let mut words = l.split_whitespace();
                    (words.next() == Some(s)).then(|| words.collect::<Vec<_>>().join(" "))
                })
                .unwrap_or_else(|| panic!("no exit status for {s}:\n{}", lines.join("\n")));
            let log = std::fs::read_to_string(self.dir.join(format!("logs/{s}-0.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            assert_eq!(
                status,
                "exit status: 0",
                "{s} did not drain cleanly; its log ends with:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            assert!(
                !log.contains("drain did not finish"),
                "{s} missed its drain deadline"
            );
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: as in ctrl_c; whatever is left of the group goes.
        unsafe { libc::killpg(self.pgid, libc::SIGKILL) };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Parses `  <name>  grpc localhost:<p>  http localhost:<p>  pid <pid>  ready`.
fn ready_line(line: &str, name: &str) -> Option<Reported> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [n, "grpc", _, "http", http, "pid", pid, "ready"] if *n == name => Some(Reported {
            http: http.strip_prefix("localhost:")?.parse().ok()?,
            pid: pid.parse().ok()?,
        }),
        _ => None,
    }
}

fn alive(pid: i32) -> bool {
    // Gone or a zombie: /proc/<pid>/stat's state after the command name.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

async fn readyz(http: u16) -> bool {
    jetmart_testkit::http::get(([127, 0, 0, 1], http).into(), "/readyz")
        .await
        .is_ok_and(|(code, _)| code == 200)
}

/// The servers and the services share the terminal's process group, so Ctrl-C reaches NATS,
/// Postgres, Redis and the SMTP sink at the same moment as the services: the outbox relay must
/// still finish within the drain deadline and every service exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_that_also_stops_the_servers_still_drains_every_service() {
    let mut stack = Stack::start(&["--own-process-group", "false"]).await;
    let services = stack.ready().await;
    stack.ctrl_c();
    // Each service has a 10 s drain deadline (and 15 s before the stack kills it).
    let status = stack.exit(Duration::from_secs(60)).await;
    stack.assert_every_service_exited_0();
    assert!(status.success(), "jetmart-stack exited with {status}");
    for (s, r) in services {
        assert!(!alive(r.pid), "{s} (pid {}) outlived the stack", r.pid);
    }
}

/// A SIGKILLed service is reported and restarted (with backoff) and serves again; then Ctrl-C
/// to the group reaches only the stack, which stops the services before the servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_is_reported_and_restarted_and_ctrl_c_stops_everything_cleanly() {
    let mut stack = Stack::start(&[]).await;
    let services = stack.ready().await;
    let payment = services["payment"];
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is the stack's child.
    assert_eq!(unsafe { libc::kill(payment.pid, libc::SIGKILL) }, 0);

    let out = stack.out.clone();
    let restarted = |out: Arc<Mutex<Vec<String>>>| async move {
        out.lock().unwrap().iter().find_map(|l| {
            l.trim_start()
                .strip_prefix("payment-0")?
                .trim_start()
                .strip_prefix("restarted, pid ")?
                .parse::<i32>()
                .ok()
        })
    };
    wait_until("payment restarted", Duration::from_secs(30), || {
        let out = out.clone();
        async move { restarted(out).await.is_some() }
    })
    .await;
    assert!(
        stack.has_line(|l| l.contains("payment-0") && l.contains("exited (signal: 9 (SIGKILL))")),
        "the exit was not reported:\n{}",
        stack.lines().join("\n")
    );
    let new_pid = restarted(out.clone()).await.unwrap();
    assert_ne!(new_pid, payment.pid);
    wait_until("payment ready again", START_TIMEOUT, || {
        let out = out.clone();
        async move {
            out.lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("payment-0") && l.contains("ready again"))
        }
    })
    .await;
    assert!(readyz(payment.http).await, "payment not ready on its port");
    assert!(
        alive(new_pid),
        "restarted payment (pid {new_pid}) is not running"
    );

    stack.ctrl_c();
    let status = stack.exit(Duration::from_secs(60)).await;
    stack.assert_every_service_exited_0();
    assert!(
        status.success(),
        "jetmart-stack exited with {status:?} ({:?})",
        status.signal()
    );
    assert!(!alive(new_pid), "payment outlived the stack");
}
