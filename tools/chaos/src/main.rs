//! `jetmart-chaos`: the local chaos harness. Starts a 3-node NATS JetStream cluster (streams at 3
//! replicas), Postgres, Redis, an SMTP sink and two replicas of every service as separate
//! processes; places orders under load while a seeded schedule SIGKILLs service replicas, kills
//! NATS nodes, crash-restarts Postgres, flushes Redis and injects poison messages; then drains and
//! runs the invariant checker. Prints one figure line; exits 1 on any violation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use jetmart_chaos::{Fault, Plan};
use jetmart_stack::{Infra, InfraOptions, Nats, SERVICES, ServiceProcess, free_port};

#[derive(Debug, Parser)]
#[command(
    name = "jetmart-chaos",
    version,
    about = "Kill jetmart's processes under load, then check nothing was lost or doubled"
)]
struct Args {
    /// Orders to place.
    #[arg(long, default_value_t = 300)]
    orders: u64,
    /// Offered orders per second.
    #[arg(long, default_value_t = 40.0, allow_negative_numbers = true)]
    rate: f64,
    /// Replicas of every service.
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    #[arg(long, default_value_t = 10)]
    service_kills: usize,
    #[arg(long, default_value_t = 1)]
    nats_kills: usize,
    #[arg(long, default_value_t = 1)]
    postgres_crashes: usize,
    #[arg(long, default_value_t = 1)]
    redis_flushes: usize,
    /// Poison messages injected at the start, on order.placed: alternately undecodable bytes
    /// and an order.placed the order service would refuse (order id `not-a-uuid`, quantity -5,
    /// currency ZZZ). Each is dead-lettered by every consumer of order.placed, counted nowhere.
    #[arg(long, default_value_t = 3)]
    poison: usize,
    /// After each Redis flush, flush again as soon as analytics is rebuilding its read model,
    /// so a flush lands in the middle of the recovery's replay.
    #[arg(long)]
    flush_mid_rebuild: bool,
    /// Milliseconds between faults.
    #[arg(long, default_value_t = 700)]
    every_ms: u64,
    /// Milliseconds a killed process or node stays down.
    #[arg(long, default_value_t = 300)]
    down_ms: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Working directory for logs and mail; removed at the end unless --keep.
    #[arg(long, default_value = ".local/chaos")]
    dir: PathBuf,
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(64);
        }
    };
    if let Err(e) = validate(&args) {
        eprintln!("jetmart-chaos: {e}");
        return ExitCode::from(64);
    }
    let outcome = tokio::select! {
        r = run(&args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // Every process and data directory the run started is gone by now (dropped), but the logs.
    if !args.keep || outcome.is_err() {
        let _ = std::fs::remove_dir_all(&args.dir);
    }
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("jetmart-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn validate(a: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.orders > 0, "--orders must be at least 1");
    anyhow::ensure!(
        a.rate.is_finite() && a.rate > 0.0,
        "--rate must be a positive number of orders per second"
    );
    anyhow::ensure!(a.replicas > 0, "--replicas must be at least 1");
    anyhow::ensure!(
        a.every_ms > 0 && a.down_ms > 0,
        "--every-ms and --down-ms must be positive"
    );
    plan(a, SERVICES.len() * a.replicas).schedule()?;
    Ok(())
}

fn plan(a: &Args, processes: usize) -> Plan {
    Plan {
        service_kills: a.service_kills,
        nats_kills: a.nats_kills,
        postgres_crashes: a.postgres_crashes,
        redis_flushes: a.redis_flushes,
        processes,
        nats_nodes: 3,
        every: Duration::from_millis(a.every_ms),
        seed: a.seed,
    }
}

async fn run(args: &Args) -> anyhow::Result<bool> {
    let logs = args.dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let infra = Infra::start(&InfraOptions {
        nats_nodes: 3,
        maildir: args.dir.join("mail"),
    })
    .await?;
    let mut procs = Vec::new();
    let mut missing = Vec::new();
    for kind in SERVICES {
        for r in 0..args.replicas {
            match ServiceProcess::new(
                *kind,
                r,
                free_port()?,
                free_port()?,
                infra.env(kind, 3),
                &logs,
            ) {
                Ok(p) => procs.push(p),
                Err(_) => {
                    missing.push(kind.name);
                    break;
                }
            }
        }
    }
    if !missing.is_empty() {
        eprintln!("not in this build, not exercised: {}", missing.join(", "));
    }
    for p in procs.iter().filter(|p| p.replica == 0 && p.kind.database) {
        p.run_command(&["migrate"]).await?;
    }
    if let Some(inv) = procs.iter().find(|p| p.kind.name == "inventory") {
        inv.run_command(&["seed-demo"]).await?;
    }
    for p in &mut procs {
        p.spawn()?;
    }
    for p in &mut procs {
        p.wait_ready(Duration::from_secs(60)).await?;
    }
    let schedule = plan(args, procs.len()).schedule()?;
    eprintln!(
        "{} processes up; {} faults scheduled every {} ms; {} poison messages at the start{}",
        procs.len(),
        schedule.len(),
        args.every_ms,
        args.poison,
        if args.flush_mid_rebuild {
            "; every Redis flush repeated while analytics rebuilds"
        } else {
            ""
        }
    );

    let client = jetmart_check::connect_nats(&infra.nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    inject_poison(&js, args.poison).await?;
    eprintln!(
        "   0.0s inject {} poison messages on order.placed ({} undecodable, {} refused orders)",
        args.poison,
        args.poison.div_ceil(2),
        args.poison / 2
    );

    let outcomes = args.dir.join("outcomes.jsonl");
    let load = jetmart_loadgen::Options {
        order_urls: procs
            .iter()
            .filter(|p| p.kind.name == "order")
            .map(|p| format!("http://127.0.0.1:{}", p.grpc))
            .collect(),
        orders: args.orders,
        rate: Some(args.rate),
        concurrency: 16,
        seed: args.seed,
        decline_share: 0.05,
        out_of_stock_share: 0.05,
        timeout: Duration::from_secs(10),
        out: Some(outcomes.clone()),
        progress: false,
    };
    let loadgen = tokio::spawn(async move { jetmart_loadgen::run(&load).await });

    let started = Instant::now();
    let mut kills: BTreeMap<&'static str, usize> = BTreeMap::new();
    let down = Duration::from_millis(args.down_ms);
    for (at, fault) in &schedule {
        tokio::time::sleep_until((started + *at).into()).await;
        *kills.entry(fault.target()).or_default() += 1;
        match fault {
            Fault::KillService { index } => {
                let p = &mut procs[*index];
                eprintln!(
                    "{:>6.1}s kill {}",
                    started.elapsed().as_secs_f64(),
                    p.label()
                );
                p.kill().await;
                tokio::time::sleep(down).await;
                p.spawn()?;
            }
            Fault::KillNats { node } => {
                let Nats::Cluster(cluster) = &infra.nats else {
                    anyhow::bail!("NATS is not a cluster")
                };
                eprintln!(
                    "{:>6.1}s kill nats node {node}",
                    started.elapsed().as_secs_f64()
                );
                cluster.kill_node(*node);
                tokio::time::sleep(down).await;
                cluster
                    .restart_node(*node)
                    .await
                    .context("restarting a NATS node")?;
            }
            Fault::CrashPostgres => {
                eprintln!("{:>6.1}s crash postgres", started.elapsed().as_secs_f64());
                infra.pg.crash();
                tokio::time::sleep(down).await;
                infra
                    .pg
                    .start_again()
                    .await
                    .context("restarting Postgres")?;
            }
            Fault::FlushRedis => {
                eprintln!("{:>6.1}s flush redis", started.elapsed().as_secs_f64());
                infra.redis.flushall().await.context("flushing Redis")?;
                if args.flush_mid_rebuild {
                    flush_mid_rebuild(&infra.redis, started).await?;
                }
            }
        }
    }
    let last_fault = Instant::now();
    let summary = loadgen.await??;
    for p in &mut procs {
        p.wait_ready(Duration::from_secs(120)).await?;
    }
    let dbs: Vec<sqlx::PgPool> = {
        let mut v = Vec::new();
        for s in SERVICES
            .iter()
            .filter(|s| s.database && procs.iter().any(|p| p.kind.name == s.name))
        {
            v.push(sqlx::PgPool::connect(&infra.pg.url_for(s.name)).await?);
        }
        v
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while !jetmart_check::is_drained(&dbs, &js).await.unwrap_or(false) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not drained 180 s after the last fault"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained_after = last_fault.elapsed();

    let sources = jetmart_check::Sources {
        order_db: infra.pg.url_for("order"),
        inventory_db: infra.pg.url_for("inventory"),
        payment_db: infra.pg.url_for("payment"),
        nats_url: infra.nats.url(),
        extra_dbs: ["notification", "survey"]
            .iter()
            .filter(|n| procs.iter().any(|p| p.kind.name == **n))
            .map(|n| infra.pg.url_for(n))
            .collect(),
        outcomes: Some(outcomes),
        maildir: procs
            .iter()
            .any(|p| p.kind.name == "notification")
            .then(|| infra.smtp.maildir().to_path_buf()),
        survey_db: procs
            .iter()
            .any(|p| p.kind.name == "survey")
            .then(|| infra.pg.url_for("survey")),
        analytics_url: procs
            .iter()
            .find(|p| p.kind.name == "analytics")
            .map(|p| format!("http://127.0.0.1:{}", p.grpc)),
    };
    let report = jetmart_check::check(&sources).await?;
    for v in &report.violations {
        println!("VIOLATION {v}");
    }
    let kills_text: Vec<String> = kills.iter().map(|(k, n)| format!("{k}:{n}")).collect();
    let analytics_text = match report.analytics_converged_after {
        Some(d) => format!(" analytics_converged_after_drain={:.1}s", d.as_secs_f64()),
        None => String::new(),
    };
    println!(
        "chaos: calls={} ok={} failed={} kills={} poison={} {} drained_after_last_fault={:.1}s{}",
        summary.records.len(),
        summary.count("ok"),
        summary.count("error") + summary.count("timeout"),
        kills_text.join(","),
        args.poison,
        report.figure_line(),
        drained_after.as_secs_f64(),
        analytics_text
    );
    for p in procs.iter_mut().rev() {
        p.stop(Duration::from_secs(15)).await;
    }
    Ok(report.ok())
}

/// The analytics rebuild lease (`jetmart_analytics::keys::REBUILD_LOCK`; a test keeps them
/// equal): present while analytics rebuilds its read model.
const ANALYTICS_REBUILD_LEASE: &str = "analytics:v1:rebuild-lock";

/// Waits (up to 20 s) until analytics holds its rebuild lease after a flush, then flushes again.
async fn flush_mid_rebuild(
    redis: &jetmart_testkit::RedisServer,
    started: Instant,
) -> anyhow::Result<()> {
    let mut conn = redis.connection().await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let rebuilding: bool = redis::cmd("EXISTS")
            .arg(ANALYTICS_REBUILD_LEASE)
            .query_async(&mut conn)
            .await?;
        if rebuilding {
            eprintln!(
                "{:>6.1}s flush redis again (analytics rebuilding)",
                started.elapsed().as_secs_f64()
            );
            return redis.flushall().await.context("flushing Redis");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{:>6.1}s analytics did not start rebuilding within 20 s; no second flush",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Poison on a subscribed subject, marked so the checker counts its dead letters as explained:
/// even ones are not an event at all, odd ones an order.placed the order service would refuse.
async fn inject_poison(js: &async_nats::jetstream::Context, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        let (subject, mut headers, payload) = if i % 2 == 0 {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("poison-{i}").as_str());
            (
                format!("order.placed.poison-{i}"),
                headers,
                "not an event".into(),
            )
        } else {
            let e = refused_order();
            (e.subject.clone(), e.nats_headers(), e.payload.clone())
        };
        headers.insert(jetmart_check::POISON_HEADER, "injected");
        js.publish_with_headers(subject, headers, payload)
            .await?
            .await?;
    }
    Ok(())
}

/// An order.placed in proper envelope that no order service would ever publish.
fn refused_order() -> jetmart_runtime::OutgoingEvent {
    use jetmart_proto::common::v1::{Money, OrderLine};
    let zzz = Money {
        amount_minor: 100,
        currency: "ZZZ".into(),
    };
    let placed = jetmart_proto::order::v1::OrderPlaced {
        order_id: "not-a-uuid".into(),
        customer_id: "chaos-poison".into(),
        customer_email: "poison@example.test".into(),
        lines: vec![OrderLine {
            sku: "SKU-POISON".into(),
            quantity: -5,
            unit_price: Some(zzz.clone()),
        }],
        total: Some(zzz),
        ..Default::default()
    };
    jetmart_runtime::OutgoingEvent::new("chaos", "not-a-uuid", &placed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_lease_key_is_the_one_analytics_uses() {
        assert_eq!(
            super::ANALYTICS_REBUILD_LEASE,
            jetmart_analytics::keys::REBUILD_LOCK
        );
    }
}
