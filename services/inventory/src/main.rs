use std::process::ExitCode;

use jetmart_inventory::app;
use jetmart_inventory::config::{Command, Config};

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = jetmart_kit::config::parse_or_exit();
    if let Err(e) = config.validate() {
        jetmart_kit::config::exit_invalid(&e)
    }
    let _telemetry = jetmart_kit::telemetry::init("inventory", config.common.log_format);
    let result = match config.command() {
        Command::Migrate => app::migrate(&config).await.map_err(|e| e.to_string()),
        Command::SeedDemo => match app::seed_demo(&config).await {
            Ok(seeded) => {
                let added = seeded.iter().filter(|s| s.added > 0).count();
                for line in &seeded {
                    println!("{line}");
                }
                println!(
                    "seed-demo: {} SKUs, {added} seeded now, {} already seeded",
                    seeded.len(),
                    seeded.len() - added
                );
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        },
        Command::Serve => match app::build(config).await {
            Ok(app) => app
                .run(jetmart_kit::shutdown::on_signal())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            ExitCode::FAILURE
        }
    }
}
