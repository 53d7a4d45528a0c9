use std::process::ExitCode;

use jetmart_inventory::app;
use jetmart_inventory::config::{Command, Config};

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = jetmart_kit::config::parse_or_exit();
    if let Err(e) = config.validate() {
        jetmart_kit::config::exit_invalid(&e);
    }
    // One-shot commands print plain lines on stdout (what they did) and stderr (why they
    // failed): no log stream mixed into what scripts read, so no telemetry for them.
    let result = match config.command() {
        Command::Migrate => app::migrate_command(&config)
            .await
            .map_err(|e| format!("jetmart-inventory migrate: {e}")),
        Command::SeedDemo => app::seed_demo_command(&config)
            .await
            .map_err(|e| format!("jetmart-inventory seed-demo: {e}")),
        Command::Serve => {
            let _telemetry =
                jetmart_kit::telemetry::init(jetmart_inventory::NAME, config.common.log_format);
            let served = jetmart_kit::command::serve(app::build(config).await, app::App::run).await;
            return jetmart_kit::exit_code(served);
        }
    };
    if let Err(e) = &result {
        eprintln!("{e}");
    }
    jetmart_kit::exit_code(result)
}
