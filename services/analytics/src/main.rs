use std::process::ExitCode;

use jetmart_analytics::app;
use jetmart_analytics::config::{Command, Config};
use jetmart_analytics::rebuild::Progress;

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = jetmart_kit::config::parse_or_exit();
    if let Err(e) = config.validate() {
        jetmart_kit::config::exit_invalid(&e);
    }
    let _telemetry = jetmart_kit::telemetry::init("analytics", config.common.log_format);
    let result = match config.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            app::migrate(&config);
            Ok(())
        }
        Command::Rebuild => rebuild(&config).await,
        Command::Serve => match app::build(config).await {
            Ok(app) => app
                .run(jetmart_kit::shutdown::on_signal())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
    };
    jetmart_kit::exit_code(result)
}

async fn rebuild(config: &Config) -> Result<(), String> {
    let report = app::rebuild(config, |p| match p {
        Progress::Started {
            previous,
            generation,
            targets,
        } => {
            let total: u64 = targets.iter().map(|(_, n)| n).sum();
            eprintln!(
                "rebuilding generation {generation} beside {previous}: up to {total} messages"
            );
        }
        Progress::Replaying {
            stream,
            phase,
            sequence,
            last,
        } => eprintln!("  {stream} {phase:?}: #{sequence} of #{last}"),
        Progress::Swapped {
            previous,
            generation,
        } => eprintln!("swapped: generation {generation} is live (was {previous})"),
        Progress::Deleted { keys } => eprintln!("deleted {keys} keys of old generations"),
    })
    .await
    .map_err(|e| e.to_string())?;
    println!(
        "analytics read model rebuilt: generation {} ({} events replayed, {} caught up, {} skipped, {} old keys deleted)",
        report.generation,
        report.replayed.applied,
        report.caught_up.applied,
        report.replayed.skipped + report.caught_up.skipped,
        report.deleted_keys
    );
    Ok(())
}
