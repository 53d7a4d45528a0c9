//! `jetmart-bench`: the system under load, with figures only (it asserts nothing).
//!
//! For 1 and 2 replicas of each saga service (order, inventory, payment) as separate processes,
//! each with consumer batching off (1) and on (32): confirmed orders/s at saturation, Postgres
//! write transactions per order, CPU seconds per service, and at fixed offered rates the
//! PlaceOrder latency and placed->confirmed latency percentiles. In the same run, the raw limits:
//! pipelined JetStream publish and a Postgres outbox-like transaction. Prints a table and writes
//! JSON.
//!
//!     cargo run --release -p jetmart-bench -- --out docs/bench.json

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use jetmart_demo_catalog::DEMO_CATALOG;
use jetmart_loadgen::Options;
use jetmart_proto::inventory::v1::AdjustStockRequest;
use jetmart_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use jetmart_stack::{Infra, InfraOptions, SERVICES, ServiceProcess, free_port};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "jetmart-bench",
    version,
    about = "Benchmark jetmart end to end (prints figures; asserts nothing)"
)]
struct Args {
    /// Orders placed for the saturation measurement.
    #[arg(long, default_value_t = 3000)]
    orders: u64,
    /// Offered rates (orders/s) for the latency measurements.
    #[arg(long, value_delimiter = ',', default_value = "200,1000")]
    rates: Vec<f64>,
    /// Seconds at each offered rate.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Replica counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    replicas: Vec<usize>,
    /// Consumer batch sizes to measure (`CONSUMER_BATCH`; 1 is one transaction per event).
    #[arg(long, value_delimiter = ',', default_value = "1,32", value_parser = clap::value_parser!(u16).range(1..=512))]
    batches: Vec<u16>,
    /// Calls in flight at saturation.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value = ".local/bench")]
    dir: PathBuf,
}

#[derive(Debug, Serialize)]
struct RateResult {
    offered_per_s: f64,
    achieved_per_s: f64,
    placeorder_ms: [f64; 3],
    placed_to_confirmed_ms: [f64; 3],
    errors: usize,
}

#[derive(Debug, Serialize)]
struct ReplicaResult {
    replicas: usize,
    consumer_batch: u16,
    saturation_confirmed_per_s: f64,
    /// Transaction ids Postgres assigned (write transactions, all databases) per settled order.
    saturation_pg_write_tx_per_order: f64,
    saturation_placeorder_ms: [f64; 3],
    cpu_seconds_per_service: BTreeMap<String, f64>,
    rates: Vec<RateResult>,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: String,
    jetstream_publish_per_s: f64,
    postgres_outbox_tx_per_s: f64,
    runs: Vec<ReplicaResult>,
}

const SAGA: [&str; 3] = ["order", "inventory", "payment"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.orders > 0 && args.seconds > 0,
        "--orders and --seconds must be positive"
    );
    anyhow::ensure!(
        args.rates.iter().all(|r| *r > 0.0),
        "--rates must be positive"
    );
    anyhow::ensure!(
        args.replicas.iter().all(|r| *r > 0),
        "--replicas must be at least 1"
    );
    eprintln!("measuring raw limits...");
    let publish = jetmart_e2e::limits::jetstream_publish(20_000).await;
    let tx = jetmart_e2e::limits::outbox_transactions(10_000).await;
    let mut runs = Vec::new();
    for &replicas in &args.replicas {
        for &batch in &args.batches {
            eprintln!("{replicas} replica(s) of each saga service, consumer batch {batch}...");
            runs.push(run(&args, replicas, batch).await?);
        }
    }
    let report = Report {
        machine: machine(),
        jetstream_publish_per_s: publish,
        postgres_outbox_tx_per_s: tx,
        runs,
    };
    print(&report);
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
        println!("written {}", out.display());
    }
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |p| p.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
                    / 1024
                    / 1024
            })
        })
        .unwrap_or(0);
    format!("{cores} cores ({cpu}), {mem} GiB")
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

async fn run(args: &Args, replicas: usize, batch: u16) -> anyhow::Result<ReplicaResult> {
    let dir = args.dir.join(format!("r{replicas}-b{batch}"));
    std::fs::create_dir_all(dir.join("logs"))?;
    let infra = Infra::start(&InfraOptions {
        nats_nodes: 1,
        maildir: dir.join("mail"),
    })
    .await?;
    let mut procs = Vec::new();
    for kind in SERVICES.iter().filter(|k| SAGA.contains(&k.name)) {
        for r in 0..replicas {
            let mut env = infra.env(kind, 1);
            env.insert("CONSUMER_BATCH".into(), batch.to_string());
            if kind.name == "payment" {
                env.insert("PAYMENT_SIMULATED_LATENCY_MAX_MS".into(), "0".into());
            }
            procs.push(ServiceProcess::new(
                *kind,
                r,
                free_port()?,
                free_port()?,
                env,
                &dir.join("logs"),
            )?);
        }
    }
    for p in &mut procs {
        if p.replica == 0 {
            p.run_command(&["migrate"]).await?;
        }
    }
    for p in &mut procs {
        p.spawn()?;
    }
    for p in &mut procs {
        p.wait_ready(Duration::from_secs(60)).await?;
    }
    let inventory = procs
        .iter()
        .find(|p| p.kind.name == "inventory")
        .context("inventory")?;
    let mut client =
        InventoryServiceClient::connect(format!("http://127.0.0.1:{}", inventory.grpc)).await?;
    for item in DEMO_CATALOG {
        client
            .adjust_stock(AdjustStockRequest {
                sku: item.sku.into(),
                delta: 10_000_000,
                reason: "benchmark stock".into(),
                idempotency_key: format!("bench-{}", item.sku),
            })
            .await?;
    }
    let order_urls: Vec<String> = procs
        .iter()
        .filter(|p| p.kind.name == "order")
        .map(|p| format!("http://127.0.0.1:{}", p.grpc))
        .collect();
    let order_db = sqlx::PgPool::connect(&infra.pg.url_for("order")).await?;

    // Saturation.
    let cpu_before: Vec<f64> = procs
        .iter()
        .map(|p| p.pid().map_or(0.0, cpu_seconds))
        .collect();
    let opts = Options {
        order_urls: order_urls.clone(),
        orders: args.orders,
        rate: None,
        concurrency: args.concurrency,
        seed: 1,
        decline_share: 0.0,
        out_of_stock_share: 0.0,
        timeout: Duration::from_secs(30),
        out: None,
        progress: false,
    };
    let xid_before = current_xid(&order_db).await?;
    let started = Instant::now();
    let summary = jetmart_loadgen::run(&opts).await?;
    let ids = ok_ids(&summary);
    wait_settled(&order_db, &ids).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let write_tx = current_xid(&order_db).await? - xid_before;
    let confirmed = count_confirmed(&order_db, &ids).await?;
    let mut cpu = BTreeMap::new();
    for (p, before) in procs.iter().zip(cpu_before) {
        *cpu.entry(p.kind.name.to_owned()).or_insert(0.0) +=
            p.pid().map_or(0.0, cpu_seconds) - before;
    }
    let saturation_placeorder_ms = [
        summary.latency_ms(50.0),
        summary.latency_ms(95.0),
        summary.latency_ms(99.0),
    ];

    let mut rates = Vec::new();
    for (i, &rate) in args.rates.iter().enumerate() {
        let opts = Options {
            orders: (rate * args.seconds as f64) as u64,
            rate: Some(rate),
            concurrency: (rate as usize / 10).clamp(16, 512),
            seed: 100 + i as u64,
            ..opts.clone()
        };
        let started = Instant::now();
        let summary = jetmart_loadgen::run(&opts).await?;
        let ids = ok_ids(&summary);
        let achieved = summary.count("ok") as f64 / started.elapsed().as_secs_f64();
        wait_settled(&order_db, &ids).await?;
        rates.push(RateResult {
            offered_per_s: rate,
            achieved_per_s: achieved,
            placeorder_ms: [
                summary.latency_ms(50.0),
                summary.latency_ms(95.0),
                summary.latency_ms(99.0),
            ],
            placed_to_confirmed_ms: placed_to_confirmed(&order_db, &ids).await?,
            errors: summary.count("error") + summary.count("timeout"),
        });
    }
    for p in procs.iter_mut().rev() {
        p.stop(Duration::from_secs(20)).await;
    }
    Ok(ReplicaResult {
        replicas,
        consumer_batch: batch,
        saturation_confirmed_per_s: confirmed as f64 / elapsed,
        saturation_pg_write_tx_per_order: write_tx as f64 / ids.len().max(1) as f64,
        saturation_placeorder_ms,
        cpu_seconds_per_service: cpu,
        rates,
    })
}

/// Postgres assigns a transaction id to each transaction that writes, in every database of the
/// server; the difference of two readings counts them (plus the reading itself).
async fn current_xid(db: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT txid_current()")
        .fetch_one(db)
        .await?)
}

fn ok_ids(summary: &jetmart_loadgen::Summary) -> Vec<String> {
    summary
        .records
        .iter()
        .filter_map(|r| r.order_id.clone())
        .collect()
}

async fn wait_settled(db: &sqlx::PgPool, ids: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let settled: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT order_id) FROM order_events WHERE kind <> 'placed' AND order_id::text = ANY($1)",
        )
        .bind(ids)
        .fetch_one(db)
        .await?;
        if settled as usize >= ids.len() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {} orders settled after 300 s",
            settled,
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count_confirmed(db: &sqlx::PgPool, ids: &[String]) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM order_events WHERE kind = 'confirmed' AND order_id::text = ANY($1)",
    )
    .bind(ids)
    .fetch_one(db)
    .await?)
}

async fn placed_to_confirmed(db: &sqlx::PgPool, ids: &[String]) -> anyhow::Result<[f64; 3]> {
    let v: Vec<f64> = sqlx::query_scalar(
        "SELECT (percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
                    ORDER BY extract(epoch FROM c.recorded_at - p.recorded_at) * 1000))::float8[]
         FROM order_events p JOIN order_events c ON c.order_id = p.order_id AND c.kind = 'confirmed'
         WHERE p.kind = 'placed' AND p.order_id::text = ANY($1)",
    )
    .bind(ids)
    .fetch_one(db)
    .await?;
    Ok([
        v.first().copied().unwrap_or(0.0),
        v.get(1).copied().unwrap_or(0.0),
        v.get(2).copied().unwrap_or(0.0),
    ])
}

fn print(r: &Report) {
    println!("\njetmart benchmark on {}", r.machine);
    println!(
        "raw limits: JetStream publish {:.0}/s, Postgres outbox-like tx {:.0}/s",
        r.jetstream_publish_per_s, r.postgres_outbox_tx_per_s
    );
    println!(
        "\n{:<9} {:>6} {:>12} {:>10} {:>12} {:>26} {:>30}",
        "replicas",
        "batch",
        "confirmed/s",
        "÷ PG tx/s",
        "PG tx/order",
        "PlaceOrder p50/95/99 ms",
        "CPU s (order/inventory/payment)"
    );
    for run in &r.runs {
        let cpu = |s: &str| run.cpu_seconds_per_service.get(s).copied().unwrap_or(0.0);
        println!(
            "{:<9} {:>6} {:>12.0} {:>10.3} {:>12.1} {:>26} {:>30}",
            run.replicas,
            run.consumer_batch,
            run.saturation_confirmed_per_s,
            run.saturation_confirmed_per_s / r.postgres_outbox_tx_per_s,
            run.saturation_pg_write_tx_per_order,
            format!(
                "{:.1}/{:.1}/{:.1}",
                run.saturation_placeorder_ms[0],
                run.saturation_placeorder_ms[1],
                run.saturation_placeorder_ms[2]
            ),
            format!(
                "{:.1}/{:.1}/{:.1}",
                cpu("order"),
                cpu("inventory"),
                cpu("payment")
            ),
        );
    }
    println!(
        "\n{:<9} {:>6} {:>9} {:>10} {:>26} {:>30} {:>7}",
        "replicas",
        "batch",
        "offered/s",
        "achieved/s",
        "PlaceOrder p50/95/99 ms",
        "placed->confirmed p50/95/99 ms",
        "errors"
    );
    for run in &r.runs {
        for rate in &run.rates {
            println!(
                "{:<9} {:>6} {:>9.0} {:>10.0} {:>26} {:>30} {:>7}",
                run.replicas,
                run.consumer_batch,
                rate.offered_per_s,
                rate.achieved_per_s,
                format!(
                    "{:.1}/{:.1}/{:.1}",
                    rate.placeorder_ms[0], rate.placeorder_ms[1], rate.placeorder_ms[2]
                ),
                format!(
                    "{:.1}/{:.1}/{:.1}",
                    rate.placed_to_confirmed_ms[0],
                    rate.placed_to_confirmed_ms[1],
                    rate.placed_to_confirmed_ms[2]
                ),
                rate.errors
            );
        }
    }
}
