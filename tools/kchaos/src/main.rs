//! `jetmart-kchaos`: the chaos run against a Kubernetes release of the chart. Deletes random pods
//! of every service Deployment and of the NATS StatefulSet with grace period 0 under load, waits
//! for the replacements to be Ready, drains, and checks the invariants. Prints one figure line;
//! exits 0 when the checker finds nothing, 1 on violations, 2 when the run could not complete,
//! 64 on bad input.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use jetmart_kchaos::run::{Config, run};
use jetmart_kchaos::schedule::{Plan, parse_duration, parse_targets};

#[derive(Debug, Parser)]
#[command(
    name = "jetmart-kchaos",
    version,
    about = "Delete pods of a jetmart Helm release under load, then check nothing was lost or doubled",
    after_help = "Needs a kubeconfig for the cluster (pods: list, delete; deployments, statefulsets: get, list) and \
port-forwards for the order service's gRPC port, Postgres and NATS; `tilt up` sets them all up. \
NATS needs an account that may read every stream and consumer: the chart's `admin` user, \
nats://admin:<password>@localhost:4222. See docs/kubernetes.md, \"Chaos run\"."
)]
struct Args {
    /// Namespace of the release.
    #[arg(long, default_value = "jetmart")]
    namespace: String,
    /// Helm release name (label app.kubernetes.io/instance).
    #[arg(long, default_value = "jetmart")]
    release: String,
    /// Label app.kubernetes.io/name of the release's objects: the chart name, or its nameOverride.
    #[arg(long, default_value = "jetmart")]
    chart_name: String,
    /// kubeconfig context (default: the current context).
    #[arg(long)]
    context: Option<String>,
    /// Services whose Deployments lose pods, comma-separated; each is hit at least once.
    #[arg(long, value_parser = targets, default_value = "order,inventory,payment,notification,survey,analytics")]
    targets: Targets,
    /// NATS pods to kill (the in-chart StatefulSet; 0 with external NATS).
    #[arg(long, default_value_t = 1)]
    nats_kills: usize,
    /// Length of the chaos phase, e.g. 120s, 2m.
    #[arg(long, value_parser = parse_duration, default_value = "120s", allow_hyphen_values = true)]
    duration: Duration,
    /// Time between kills, e.g. 5s.
    #[arg(long, value_parser = parse_duration, default_value = "5s", allow_hyphen_values = true)]
    kill_every: Duration,
    /// Seed of the kill schedule, the victims and the orders.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Order service gRPC endpoint (a port-forward, e.g. http://localhost:50051); repeatable.
    #[arg(long = "order-url", required = true)]
    order_urls: Vec<String>,
    /// Offered orders per second during the chaos phase.
    #[arg(long, default_value_t = 20.0, allow_negative_numbers = true)]
    rate: f64,
    /// JSON-lines file of every PlaceOrder call's outcome (read by the checker).
    #[arg(long, default_value = ".local/kchaos/outcomes.jsonl")]
    outcomes: PathBuf,
    /// Order service database, through the Postgres port-forward.
    #[arg(long, env = "ORDER_DATABASE_URL", hide_env_values = true)]
    order_db: String,
    /// Inventory service database, through the Postgres port-forward.
    #[arg(long, env = "INVENTORY_DATABASE_URL", hide_env_values = true)]
    inventory_db: String,
    /// Payment service database, through the Postgres port-forward.
    #[arg(long, env = "PAYMENT_DATABASE_URL", hide_env_values = true)]
    payment_db: String,
    /// More service databases (notification, survey): their outboxes must drain too.
    #[arg(long = "extra-db")]
    extra_dbs: Vec<String>,
    /// NATS URL through the port-forward, with an account that reads every stream and consumer.
    #[arg(long, env = "NATS_URL", hide_env_values = true)]
    nats_url: String,
    /// How long a workload may take to be Ready again after a kill.
    #[arg(long, value_parser = parse_duration, default_value = "180s", allow_hyphen_values = true)]
    ready_timeout: Duration,
    /// How long the system may take to drain once the load has ended.
    #[arg(long, value_parser = parse_duration, default_value = "300s", allow_hyphen_values = true)]
    drain_timeout: Duration,
}

/// The parsed `--targets` list (one value, comma-separated).
#[derive(Debug, Clone)]
struct Targets(Vec<String>);

fn targets(text: &str) -> Result<Targets, String> {
    parse_targets(text).map(Targets)
}

impl Args {
    fn config(self) -> Config {
        Config {
            namespace: self.namespace,
            release: self.release,
            chart_name: self.chart_name,
            context: self.context,
            plan: Plan {
                services: self.targets.0,
                nats_kills: self.nats_kills,
                duration: self.duration,
                every: self.kill_every,
                seed: self.seed,
            },
            order_urls: self.order_urls,
            rate: self.rate,
            outcomes: self.outcomes,
            order_db: self.order_db,
            inventory_db: self.inventory_db,
            payment_db: self.payment_db,
            extra_dbs: self.extra_dbs,
            nats_url: self.nats_url,
            ready_timeout: self.ready_timeout,
            drain_timeout: self.drain_timeout,
        }
    }
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
    let config = args.config();
    if let Err(e) = config.validate() {
        eprintln!("jetmart-kchaos: {e}");
        return ExitCode::from(64);
    }
    let outcome = tokio::select! {
        r = run(&config) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match outcome {
        Ok(report) => {
            for v in &report.check.violations {
                println!("VIOLATION {v}");
            }
            println!("{}", report.figure_line());
            if report.check.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("jetmart-kchaos: {e:#}");
            ExitCode::from(2)
        }
    }
}
