//! Order service settings.

use clap::{Parser, Subcommand};
use jetmart_kit::{CommonArgs, ConfigError};

#[derive(Debug, Clone, Parser)]
#[command(name = "jetmart-order", version, about = "jetmart order service")]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The order service's own database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Most lines one order may have.
    #[arg(long, env = "ORDER_MAX_LINES", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_lines: u32,
    /// Most units of one line.
    #[arg(long, env = "ORDER_MAX_QUANTITY", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_quantity: u32,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Rebuild the order read model from the event store beside the live one, then swap.
    RebuildProjection,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.common.validate()?;
        jetmart_kit::config::require_postgres_url("DATABASE_URL", &self.database_url)
    }

    pub fn limits(&self) -> crate::domain::Limits {
        crate::domain::Limits {
            max_lines: self.max_lines as usize,
            max_quantity_per_line: self.max_quantity,
            ..Default::default()
        }
    }
}
