use std::process::ExitCode;

use jetmart_survey::app;
use jetmart_survey::config::{Command, Config};

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = jetmart_kit::config::parse_or_exit();
    if let Err(e) = config.validate() {
        jetmart_kit::config::exit_invalid(&e);
    }
    let _telemetry = jetmart_kit::telemetry::init(jetmart_survey::NAME, config.common.log_format);
    let result = match config.command.unwrap_or(Command::Serve) {
        Command::Migrate => app::migrate(&config).await.map_err(|e| e.to_string()),
        Command::Serve => {
            jetmart_kit::command::serve(app::build(config).await, app::App::run).await
        }
    };
    jetmart_kit::exit_code(result)
}
