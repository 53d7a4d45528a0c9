use std::process::ExitCode;

use jetmart_inventory::app;
use jetmart_inventory::config::{Command, Config};

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = jetmart_kit::config::parse_or_exit();
    if let Err(e) = config.validate() {
        jetmart_kit::config::exit_invalid(&e)
    }
    match config.command() {
        Command::Serve => {
            let _telemetry = jetmart_kit::telemetry::init("inventory", config.common.log_format);
            let result = match app::build(config).await {
                Ok(app) => app
                    .run(jetmart_kit::shutdown::on_signal())
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "exiting");
                    ExitCode::FAILURE
                }
            }
        }
        // One-shot commands: plain lines on stdout (what they did) and stderr (why they failed),
        // no log stream mixed into what scripts read.
        Command::Migrate => match app::migrate(&config).await {
            Ok(()) => {
                println!("migrate: inventory database is up to date");
                ExitCode::SUCCESS
            }
            Err(e) => fail("migrate", &e),
        },
        Command::SeedDemo => match app::seed_demo(&config).await {
            Ok(seeded) => {
                // Summary first: the local stack shows the first line.
                let added = seeded.iter().filter(|s| s.added > 0).count();
                println!(
                    "seed-demo: {} SKUs, {added} seeded now, {} already seeded",
                    seeded.len(),
                    seeded.len() - added
                );
                for line in &seeded {
                    println!("  {line}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail("seed-demo", &e),
        },
    }
}

fn fail(command: &str, e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("jetmart-inventory {command}: {e}");
    ExitCode::FAILURE
}
