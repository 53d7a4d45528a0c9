//! `jetmartctl`: parse, run, map the outcome to an exit status (0 done, 1 failed, 2 usage).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // Usage errors exit 2 with clap's message; --help and --version exit 0.
    let cli = jetmart_cli::args::Cli::parse();
    // The libraries log through tracing; show it only when asked (RUST_LOG=info).
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    match jetmart_cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jetmartctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
