//! `jetmart-loadgen`: place orders against the order service and record every outcome.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use jetmart_loadgen::{Options, run};

#[derive(Debug, Parser)]
#[command(
    name = "jetmart-loadgen",
    version,
    about = "Place orders over gRPC at a target rate and record every outcome"
)]
struct Args {
    /// Order service gRPC endpoint; repeat for several replicas.
    #[arg(long = "order-url", default_value = "http://127.0.0.1:50051")]
    order_urls: Vec<String>,
    /// Orders to place.
    #[arg(long, default_value_t = 1000)]
    orders: u64,
    /// Target orders per second (default: as fast as --concurrency allows).
    #[arg(long, allow_negative_numbers = true)]
    rate: Option<f64>,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seed of the random customers, SKUs and quantities.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of orders paid with a declining test token.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    decline_share: f64,
    /// Share of orders asking for more of a scarce SKU than exists.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    out_of_stock_share: f64,
    /// Per-call timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// JSON-lines file of every call's outcome (what jetmart-check --outcomes reads).
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let opts = Options {
        order_urls: args.order_urls,
        orders: args.orders,
        rate: args.rate,
        concurrency: args.concurrency,
        seed: args.seed,
        decline_share: args.decline_share,
        out_of_stock_share: args.out_of_stock_share,
        timeout: Duration::from_millis(args.timeout_ms),
        out: args.out,
        progress: !args.quiet,
    };
    if let Err(e) = opts.validate() {
        eprintln!("jetmart-loadgen: {e}");
        return ExitCode::from(64);
    }
    match run(&opts).await {
        Ok(s) => {
            println!(
                "orders={} ok={} errors={} timeouts={} elapsed={:.1}s rate={:.0}/s placeorder_p50_ms={:.1} p95_ms={:.1} p99_ms={:.1}",
                s.records.len(),
                s.count("ok"),
                s.count("error"),
                s.count("timeout"),
                s.elapsed.as_secs_f64(),
                s.records.len() as f64 / s.elapsed.as_secs_f64().max(1e-9),
                s.latency_ms(50.0),
                s.latency_ms(95.0),
                s.latency_ms(99.0)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("jetmart-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
