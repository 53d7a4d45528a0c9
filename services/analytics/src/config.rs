//! Analytics service settings.

use std::time::Duration;

use clap::{Parser, Subcommand};
use jetmart_kit::config::require_redis_url;
use jetmart_kit::{CommonArgs, ConfigError};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "jetmart-analytics",
    version,
    about = "jetmart analytics service: the read model of every stream and the live dashboard"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Redis holding the read model (redis:// or rediss://).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: String,
    /// How long the exactly-once marker of an event is kept. It must outlive any redelivery or
    /// replay of the event, i.e. the streams' max age (7 days).
    #[arg(long, env = "ANALYTICS_MARKER_TTL_SECS", default_value_t = 8 * 24 * 3600,
          value_parser = clap::value_parser!(u64).range(60..=365 * 24 * 3600))]
    pub marker_ttl_secs: u64,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Nothing to migrate (the read model lives in Redis); exits 0 so every service shares one contract.
    Migrate,
    /// Replay every stream into a fresh keyspace beside the live one, swap it in, delete the old one.
    Rebuild,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.common.validate()?;
        require_redis_url("REDIS_URL", &self.redis_url)
    }

    pub fn marker_ttl(&self) -> Duration {
        Duration::from_secs(self.marker_ttl_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("jetmart-analytics").chain(args.iter().copied()))
    }

    #[test]
    fn redis_url_is_required_and_checked() {
        assert!(parse(&[]).is_err(), "REDIS_URL is required");
        let bad = parse(&["--redis-url", "http://r:6379"]).unwrap();
        assert_eq!(bad.validate().unwrap_err().setting, "REDIS_URL");
        let good = parse(&["--redis-url", "redis://r:6379/1", "rebuild"]).unwrap();
        good.validate().unwrap();
        assert_eq!(good.command, Some(Command::Rebuild));
        assert_eq!(good.marker_ttl(), Duration::from_secs(8 * 24 * 3600));
        assert!(parse(&["--redis-url", "redis://r", "--marker-ttl-secs", "1"]).is_err());
    }
}
