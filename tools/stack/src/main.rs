//! `jetmart-stack`: the whole system locally, in the foreground, with a demo order flowing
//! through it. Services that exit are reported and restarted with backoff; Ctrl-C stops every
//! process it started (services first, so they drain against live servers) and removes their
//! data.
#![allow(unsafe_code)] // pre_exec: the parent-death signal for the process-group child

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use jetmart_proto::common::v1::{Money, OrderLine};
use jetmart_proto::order::v1::order_service_client::OrderServiceClient;
use jetmart_proto::order::v1::{GetOrderRequest, OrderStatus, PlaceOrderRequest};
use jetmart_stack::supervise::{Backoff, Supervisor};
use jetmart_stack::{Infra, InfraOptions, SERVICES, ServiceProcess, free_port};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Set in the copy of this program that runs the stack in its own process group.
const IN_OWN_GROUP: &str = "JETMART_STACK_IN_OWN_GROUP";
/// How long a service may drain after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, Parser)]
#[command(
    name = "jetmart-stack",
    version,
    about = "Run jetmart locally: NATS, Postgres, Redis, an SMTP sink and every service"
)]
struct Args {
    /// First gRPC port; services get consecutive ports (order, inventory, payment, notification,
    /// survey, analytics). 0: any free port for each.
    #[arg(long, default_value_t = 50051)]
    grpc_port: u16,
    /// First HTTP port (/healthz, /readyz, /metrics, dashboards), consecutive like the gRPC
    /// ports. 0: any free port for each.
    #[arg(long, default_value_t = 8081)]
    http_port: u16,
    /// Where service logs and received mail are kept (both emptied at start).
    #[arg(long, default_value = ".local/stack")]
    dir: PathBuf,
    /// Place a demo order and follow it to its end.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    demo: bool,
    /// Start, run the demo, then stop (no waiting for Ctrl-C).
    #[arg(long)]
    once: bool,
    /// Run the servers and services in a process group of their own, so that a terminal's
    /// Ctrl-C reaches only this program, which then stops the services before the servers they
    /// drain against. `false` leaves them in the caller's group (every process gets the signal).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    own_process_group: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.own_process_group && std::env::var_os(IN_OWN_GROUP).is_none() {
        in_own_group()
    } else {
        tokio::runtime::Runtime::new()
            .context("starting the runtime")
            .and_then(|rt| rt.block_on(run(args)))
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jetmart-stack: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs this program again in a new process group and forwards SIGINT and SIGTERM to it as
/// SIGTERM. Its exit code is ours.
fn in_own_group() -> anyhow::Result<ExitCode> {
    // One thread: the child's parent-death signal fires when the forking thread ends.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut stop = Stop::listen()?;
        let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
        cmd.args(std::env::args_os().skip(1))
            .env(IN_OWN_GROUP, "1")
            // A background process group must not read the terminal.
            .stdin(std::process::Stdio::null())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; if this program dies, the stack is told to stop
        // (and drains) instead of living on unseen.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("starting the stack")?;
        let pid = child.id().context("the stack has no pid")?;
        loop {
            tokio::select! {
                status = child.wait() => {
                    let status = status?;
                    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                    return Ok(ExitCode::from(code as u8));
                }
                _ = stop.wait() => {
                    // SAFETY: kill(2) has no memory-safety preconditions; pid is our child.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                }
            }
        }
    })
}

/// SIGINT and SIGTERM, listened for from the start so that a signal during start-up stops the
/// stack cleanly too.
struct Stop {
    int: Signal,
    term: Signal,
    requested: bool,
}

impl Stop {
    fn listen() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            requested: false,
        })
    }

    async fn wait(&mut self) {
        if self.requested {
            return std::future::pending().await;
        }
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        self.requested = true;
    }

    /// `fut`, or None once a stop is requested.
    async fn or_stop<T>(&mut self, fut: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            v = fut => Some(v),
            _ = self.wait() => None,
        }
    }
}

/// Ports for the services: consecutive from `first`, or any free one each when `first` is 0.
fn ports(first: u16) -> anyhow::Result<Vec<u16>> {
    (0..SERVICES.len() as u16)
        .map(|i| {
            if first == 0 {
                free_port()
            } else {
                Ok(first + i)
            }
        })
        .collect()
}

/// Removes what an earlier run left, so that this run shows only its own mail and logs.
fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("emptying {}", dir.display())),
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut stop = Stop::listen()?;
    // Absolute, so that the paths printed work from any directory.
    let dir =
        std::path::absolute(&args.dir).with_context(|| format!("--dir {}", args.dir.display()))?;
    let logs = dir.join("logs");
    let maildir = dir.join("mail");
    fresh_dir(&logs)?;
    fresh_dir(&maildir)?;
    println!("jetmart local stack (logs in {})", logs.display());
    let options = InfraOptions {
        nats_nodes: 1,
        maildir: maildir.clone(),
    };
    let Some(infra) = stop.or_stop(Infra::start(&options)).await else {
        println!("stopped during start");
        return Ok(ExitCode::SUCCESS);
    };
    let infra = infra?;
    println!("  NATS         {}", infra.nats.url());
    println!("  Postgres     {}", infra.pg.admin_url());
    println!("  Redis        {}", infra.redis.url());
    println!(
        "  SMTP sink    {} (mail in {})",
        infra.smtp.url(),
        infra.smtp.maildir().join("new").display()
    );

    let (grpc_ports, http_ports) = (ports(args.grpc_port)?, ports(args.http_port)?);
    let mut services = Vec::new();
    for (i, kind) in SERVICES.iter().enumerate() {
        let (grpc, http) = (grpc_ports[i], http_ports[i]);
        match ServiceProcess::new(*kind, 0, grpc, http, infra.env(kind, 1), &logs) {
            Ok(p) => services.push(p),
            Err(e) => println!("  {:<12} not in this build ({e})", kind.name),
        }
    }
    // `ok`: nothing failed so far; `up`: keep going (no failure, no stop requested).
    let (mut ok, mut up) = match stop.or_stop(start(&mut services)).await {
        None => (true, false),
        Some(Err(e)) => {
            println!("start failed: {e:#}");
            (false, false)
        }
        Some(Ok(())) => (true, true),
    };
    let port_of = |name: &str, http: bool| {
        services
            .iter()
            .find(|s| s.kind.name == name)
            .map(|s| if http { s.http } else { s.grpc })
    };
    let (order_port, analytics_http) = (port_of("order", false), port_of("analytics", true));

    if up
        && args.demo
        && let Some(order_port) = order_port
    {
        match stop.or_stop(demo(order_port, &infra)).await {
            None => up = false,
            Some(Ok(())) => {}
            Some(Err(e)) => {
                println!("demo failed: {e:#}");
                // --once is a check: a failed demo fails it.
                ok = !args.once;
            }
        }
    }
    if up && !args.once {
        let grpcurl = grpcurl();
        println!("\nTry:");
        if let Some(port) = order_port {
            println!("  {grpcurl} -plaintext localhost:{port} list");
            println!(
                "  {grpcurl} -plaintext localhost:{port} describe jetmart.order.v1.OrderService"
            );
        }
        println!(
            "  ls {}   # received emails",
            infra.smtp.maildir().join("new").display()
        );
        if let Some(port) = analytics_http {
            println!("  live analytics dashboard: http://localhost:{port}/ (open it in a browser)");
        }
        println!("\nRunning; a service that exits is restarted. Ctrl-C stops everything.");
        let mut supervisor = Supervisor::new(services, Backoff::default());
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while stop.or_stop(tick.tick()).await.is_some() {
            for event in supervisor.check().await {
                println!("{event}");
            }
        }
        services = supervisor.into_services();
    } else if up && ok {
        println!(
            "\n--once: stopping the stack now (run scripts/dev.sh without --once to keep it up)"
        );
    }
    println!("stopping...");
    let stopping = Instant::now();
    let stopped = stop_all(&mut services).await;
    let drained = stopping.elapsed();
    drop(infra);
    let clean = stopped.iter().all(|(_, status)| status.is_ok());
    for (name, status) in stopped {
        match status {
            Ok(s) | Err(s) => println!("  {name:<12} {s}"),
        }
    }
    println!(
        "services stopped in {} ms, servers in {} ms",
        drained.as_millis(),
        (stopping.elapsed() - drained).as_millis()
    );
    if !clean {
        println!(
            "some services did not stop cleanly (logs in {})",
            logs.display()
        );
    }
    Ok(if ok && clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Migrates and seeds inventory, spawns every service and waits until each is ready.
async fn start(services: &mut [ServiceProcess]) -> anyhow::Result<()> {
    if let Some(inventory) = services.iter().find(|s| s.kind.name == "inventory") {
        inventory.run_command(&["migrate"]).await?;
        let seeded = inventory.run_command(&["seed-demo"]).await?;
        println!(
            "  catalog      {}",
            seeded.lines().next().unwrap_or("seeded")
        );
    }
    for s in services.iter_mut() {
        s.spawn()?;
    }
    for s in services.iter_mut() {
        s.wait_ready(Duration::from_secs(60)).await?;
        println!(
            "  {:<12} grpc localhost:{}  http localhost:{}  pid {}  ready",
            s.kind.name,
            s.grpc,
            s.http,
            s.pid().unwrap_or(0)
        );
    }
    Ok(())
}

/// SIGTERM to every service at once, then waits for each; each drains within its deadline.
/// `Ok` is a clean exit.
async fn stop_all(services: &mut [ServiceProcess]) -> Vec<(&'static str, Result<String, String>)> {
    for s in services.iter() {
        s.terminate();
    }
    let mut stopped = Vec::new();
    for s in services.iter_mut() {
        let name = s.kind.name;
        if s.pid().is_none() {
            stopped.push((name, Err("was not running".to_owned())));
            continue;
        }
        stopped.push(match s.stop(STOP_GRACE).await {
            Some(st) if st.success() => (name, Ok(st.to_string())),
            Some(st) => (name, Err(st.to_string())),
            None => (
                name,
                Err(format!("killed after {} s", STOP_GRACE.as_secs())),
            ),
        });
    }
    stopped
}

/// The grpcurl the bootstrap installed, as a path that works from any directory.
fn grpcurl() -> String {
    jetmart_testkit::tools::tools_dir()
        .map(|t| t.join("venv/bin/grpcurl"))
        .filter(|p| p.is_file())
        .map_or_else(|| "grpcurl".to_owned(), |p| p.display().to_string())
}

async fn demo(order_port: u16, infra: &Infra) -> anyhow::Result<()> {
    let mut client = OrderServiceClient::connect(format!("http://127.0.0.1:{order_port}")).await?;
    let eur = |minor| {
        Some(Money {
            amount_minor: minor,
            currency: "EUR".into(),
        })
    };
    let req = PlaceOrderRequest {
        idempotency_key: uuid::Uuid::now_v7().to_string(),
        customer_id: "demo-customer".into(),
        customer_email: "ada@example.com".into(),
        lines: vec![
            OrderLine {
                sku: "SKU-0001".into(),
                quantity: 2,
                unit_price: eur(1999),
            },
            OrderLine {
                sku: "SKU-0002".into(),
                quantity: 1,
                unit_price: eur(4500),
            },
        ],
        payment_token: "tok_visa".into(),
        currency: "EUR".into(),
    };
    let started = Instant::now();
    let placed = client
        .place_order(req)
        .await?
        .into_inner()
        .order
        .context("no order in the response")?;
    println!(
        "\ndemo order {} placed: {:?}",
        placed.order_id,
        placed.status()
    );
    let mut last = placed.status();
    let mut version = placed.version;
    while !matches!(last, OrderStatus::Confirmed | OrderStatus::Cancelled) {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "order still {last:?} after 30 s"
        );
        // Read-your-writes: wait for the next version of the read model.
        let req = GetOrderRequest {
            order_id: placed.order_id.clone(),
            min_version: Some(version + 1),
        };
        match client.get_order(req).await {
            Ok(r) => {
                let o = r.into_inner().order.context("no order")?;
                version = o.version;
                if o.status() != last {
                    last = o.status();
                    println!(
                        "  -> {:?} after {} ms {}",
                        last,
                        started.elapsed().as_millis(),
                        o.cancel_detail
                    );
                }
            }
            Err(s) if s.code() == tonic::Code::Unavailable => {}
            Err(s) => return Err(s.into()),
        }
    }
    // A confirmed order gets a confirmation and a survey invitation, a cancelled one a notice.
    let expected = if last == OrderStatus::Confirmed { 2 } else { 1 };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut shown = Vec::new();
    while shown.len() < expected && Instant::now() < deadline {
        // Only this order's mail (the notification service tags each email with its order).
        let new: Vec<_> = infra
            .smtp
            .try_messages()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| {
                m.header("X-Jetmart-Order-Id") == Some(placed.order_id.as_str())
                    && !shown.contains(&m.file)
            })
            .collect();
        for m in new {
            println!(
                "  email to {:?}: {:?}",
                m.to,
                m.subject.as_deref().unwrap_or("")
            );
            if let Some(link) = m.text.split_whitespace().find(|w| w.contains("/s/")) {
                println!("    survey link: {link} ({})", check_link(link).await);
            }
            shown.push(m.file);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::ensure!(
        shown.len() >= expected,
        "{} of {expected} emails for order {} arrived within 15 s",
        shown.len(),
        placed.order_id
    );
    Ok(())
}

/// Opens a survey link the way a browser would and says what came back.
async fn check_link(link: &str) -> String {
    let Some((authority, path)) = link
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
    else {
        return "not an http link".into();
    };
    let Ok(addr) = tokio::net::lookup_host(authority)
        .await
        .map(|mut a| a.next())
    else {
        return format!("cannot resolve {authority}");
    };
    let Some(addr) = addr else {
        return format!("cannot resolve {authority}");
    };
    match jetmart_testkit::http::get(addr, &format!("/{path}")).await {
        Ok((200, _)) => "opens the answer form: HTTP 200".into(),
        Ok((code, _)) => format!("does NOT work: HTTP {code}"),
        Err(e) => format!("does NOT work: {e}"),
    }
}
