//! `jetmart-check`: checks the invariants of a drained jetmart system, prints violations and one
//! figure line; exits 1 on any violation.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use jetmart_check::{Sources, check};

#[derive(Debug, Parser)]
#[command(
    name = "jetmart-check",
    version,
    about = "Check that a drained jetmart system lost and doubled nothing"
)]
struct Args {
    #[arg(long, env = "ORDER_DATABASE_URL")]
    order_db: String,
    #[arg(long, env = "INVENTORY_DATABASE_URL")]
    inventory_db: String,
    #[arg(long, env = "PAYMENT_DATABASE_URL")]
    payment_db: String,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// More service databases whose outboxes count deduplicated publishes.
    #[arg(long = "extra-db")]
    extra_dbs: Vec<String>,
    /// JSON-lines outcomes of PlaceOrder calls written by jetmart-loadgen.
    #[arg(long)]
    outcomes: Option<PathBuf>,
    /// Maildir the SMTP server wrote: checks one email per order outcome (invariant 4).
    #[arg(long)]
    maildir: Option<PathBuf>,
    /// Survey database, to match survey emails with invitations.
    #[arg(long, env = "SURVEY_DATABASE_URL")]
    survey_db: Option<String>,
    /// Analytics gRPC endpoint: checks its totals against the order service (invariant 6).
    #[arg(long)]
    analytics_url: Option<String>,
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
    let sources = Sources {
        order_db: args.order_db,
        inventory_db: args.inventory_db,
        payment_db: args.payment_db,
        nats_url: args.nats_url,
        extra_dbs: args.extra_dbs,
        outcomes: args.outcomes,
        maildir: args.maildir,
        survey_db: args.survey_db,
        analytics_url: args.analytics_url,
    };
    match check(&sources).await {
        Ok(report) => {
            for v in &report.violations {
                println!("VIOLATION {v}");
            }
            println!("{}", report.figure_line());
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("jetmart-check: {e:#}");
            ExitCode::from(2)
        }
    }
}
