//! The jetmart system on one machine: throwaway NATS (one node or a 3-node JetStream cluster),
//! one Postgres cluster with a database per service, Redis, an SMTP sink that keeps what it
//! receives, and each service as its own process (optionally several replicas). Used by
//! `jetmart-stack` (the local demo) and by the chaos harness.
#![allow(unsafe_code)] // pre_exec: the parent-death signal for service processes

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use jetmart_testkit::{NatsCluster, NatsServer, PgCluster, RedisServer, SmtpSink};
use tokio::process::{Child, Command};

pub mod supervise;

/// A service the stack can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceKind {
    pub name: &'static str,
    pub database: bool,
    pub redis: bool,
    pub smtp: bool,
}

/// Every jetmart service, in start order.
pub const SERVICES: &[ServiceKind] = &[
    ServiceKind {
        name: "order",
        database: true,
        redis: false,
        smtp: false,
    },
    ServiceKind {
        name: "inventory",
        database: true,
        redis: true,
        smtp: false,
    },
    ServiceKind {
        name: "payment",
        database: true,
        redis: false,
        smtp: false,
    },
    ServiceKind {
        name: "notification",
        database: true,
        redis: false,
        smtp: true,
    },
    ServiceKind {
        name: "survey",
        database: true,
        redis: false,
        smtp: false,
    },
    ServiceKind {
        name: "analytics",
        database: false,
        redis: true,
        smtp: false,
    },
];

pub enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Nats {
    pub fn url(&self) -> String {
        match self {
            Nats::Single(s) => s.url(),
            Nats::Cluster(c) => c.urls(),
        }
    }
}

/// The shared servers.
pub struct Infra {
    pub nats: Nats,
    pub pg: PgCluster,
    pub redis: RedisServer,
    pub smtp: SmtpSink,
}

#[derive(Debug, Clone)]
pub struct InfraOptions {
    pub nats_nodes: usize,
    /// Where the SMTP sink keeps received mail.
    pub maildir: PathBuf,
}

impl Infra {
    pub async fn start(opts: &InfraOptions) -> anyhow::Result<Self> {
        let nats = if opts.nats_nodes > 1 {
            Nats::Cluster(
                NatsCluster::start(opts.nats_nodes)
                    .await
                    .context("starting the NATS cluster")?,
            )
        } else {
            Nats::Single(NatsServer::start().await.context("starting NATS")?)
        };
        let pg = PgCluster::start().await.context("starting Postgres")?;
        for s in SERVICES.iter().filter(|s| s.database) {
            pg.create_database(s.name)
                .await
                .with_context(|| format!("creating database {}", s.name))?;
        }
        let redis = RedisServer::start().await.context("starting Redis")?;
        let smtp = SmtpSink::start_in(&opts.maildir, free_port()?)
            .await
            .context("starting the SMTP sink")?;
        Ok(Self {
            nats,
            pg,
            redis,
            smtp,
        })
    }

    /// Environment of one service process.
    pub fn env(&self, kind: &ServiceKind, stream_replicas: usize) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert("NATS_URL".into(), self.nats.url());
        env.insert("STREAM_REPLICAS".into(), stream_replicas.to_string());
        if kind.database {
            env.insert("DATABASE_URL".into(), self.pg.url_for(kind.name));
        }
        if kind.redis {
            env.insert("REDIS_URL".into(), self.redis.url());
        }
        if kind.smtp {
            env.insert("SMTP_URL".into(), self.smtp.url());
            env.insert("SMTP_FROM".into(), "jetmart <shop@jetmart.test>".into());
        }
        env
    }
}

/// A free loopback port for a service (see [`jetmart_testkit::free_port`]).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(jetmart_testkit::free_port()?)
}

/// Where the service binaries are: beside this executable (cargo puts every workspace binary
/// of a profile in one directory).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("executable has no directory")?
        .to_path_buf())
}

/// One running service process.
pub struct ServiceProcess {
    pub kind: ServiceKind,
    pub replica: usize,
    pub grpc: u16,
    pub http: u16,
    env: BTreeMap<String, String>,
    bin: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl ServiceProcess {
    pub fn new(
        kind: ServiceKind,
        replica: usize,
        grpc: u16,
        http: u16,
        mut env: BTreeMap<String, String>,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        if kind.name == "survey" {
            // The emailed survey link points at this replica's HTTP server.
            env.entry("SURVEY_PUBLIC_URL".into())
                .or_insert_with(|| format!("http://127.0.0.1:{http}"));
        }
        let bin = bin_dir()?.join(format!("jetmart-{}", kind.name));
        if !bin.is_file() {
            bail!(
                "{} is not built (cargo build --workspace --bins)",
                bin.display()
            );
        }
        let log = log_dir.join(format!("{}-{replica}.log", kind.name));
        Ok(Self {
            kind,
            replica,
            grpc,
            http,
            env,
            bin,
            log,
            child: None,
        })
    }

    pub fn label(&self) -> String {
        format!("{}-{}", self.kind.name, self.replica)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Runs `jetmart-<svc> <args>` once with this process's environment (e.g. `seed-demo`).
    pub async fn run_command(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.bin)
            .args(args)
            .envs(&self.env)
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "warn")
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "{} {} failed: {}",
                self.bin.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.envs(&self.env)
            .env("GRPC_ADDR", format!("127.0.0.1:{}", self.grpc))
            .env("HTTP_ADDR", format!("127.0.0.1:{}", self.http))
            .env("LOG_FORMAT", "json")
            .env("SHUTDOWN_DEADLINE_SECS", "10")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child when
        // its parent thread dies, so a killed stack leaves no service behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("starting {}", self.bin.display()))?,
        );
        Ok(())
    }

    /// SIGKILL, no drain.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Sends SIGTERM (a graceful drain) without waiting.
    pub fn terminate(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) has no memory-safety preconditions; pid is our unreaped child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }

    /// SIGTERM, then wait up to `grace`, then SIGKILL. None when it had to be killed (or was
    /// not running).
    pub async fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        self.terminate();
        let mut child = self.child.take()?;
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                None
            }
        }
    }

    /// The exit status, once the process has exited (it is reaped then; [`spawn`](Self::spawn)
    /// starts it again).
    pub fn try_exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Whether `/readyz` answers 200 now.
    pub async fn is_ready(&self) -> bool {
        jetmart_testkit::http::get(([127, 0, 0, 1], self.http).into(), "/readyz")
            .await
            .is_ok_and(|(code, _)| code == 200)
    }

    /// Polls `/readyz` until it answers 200, or fails with the end of the log.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.is_ready().await {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "{} exited with {status} during start:\n{}",
                    self.label(),
                    tail(&self.log, 20)
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} not ready after {timeout:?}:\n{}",
                    self.label(),
                    tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
