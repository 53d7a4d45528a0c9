//! Settings of the inventory service, from flags or environment.

use std::time::Duration;

use clap::{Parser, Subcommand};
use jetmart_kit::CommonArgs;
use jetmart_kit::config::{ConfigError, require_postgres_url, require_redis_url};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "jetmart-inventory",
    version,
    about = "jetmart inventory service"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The inventory database.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Redis for the availability cache (required to serve; optional for migrate and seed-demo,
    /// which refresh the cache when it is given).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Lifetime of a cache entry: the backstop that bounds how long a stale entry can be served.
    #[arg(long, env = "CACHE_TTL_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub cache_ttl_secs: u64,
    /// Low-stock threshold given to a SKU first created by AdjustStock.
    #[arg(long, env = "LOW_STOCK_THRESHOLD", default_value_t = 5,
          value_parser = clap::value_parser!(i64).range(0..=1_000_000_000))]
    pub low_stock_threshold: i64,
    /// Postgres connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Run the database migrations and exit.
    Migrate,
    /// Create the demo catalog's SKUs with their initial stock (idempotent) and exit.
    SeedDemo,
}

impl Config {
    pub fn command(&self) -> Command {
        self.command.clone().unwrap_or(Command::Serve)
    }

    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_secs)
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.common.validate()?;
        require_postgres_url("DATABASE_URL", &self.database_url)?;
        match &self.redis_url {
            Some(url) => require_redis_url("REDIS_URL", url),
            None if self.command() == Command::Serve => Err(ConfigError::new(
                "REDIS_URL",
                "required to serve (the availability cache)",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("jetmart-inventory").chain(args.iter().copied()))
    }

    #[test]
    fn settings_are_checked_and_named() {
        let ok = parse(&[
            "--database-url",
            "postgres://x/db",
            "--redis-url",
            "redis://r:6379",
        ])
        .unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.command(), Command::Serve);

        if std::env::var_os("REDIS_URL").is_none() {
            let no_redis = parse(&["--database-url", "postgres://x/db"]).unwrap();
            assert_eq!(no_redis.validate().unwrap_err().setting, "REDIS_URL");
        }
        let seed = parse(&["--database-url", "postgres://x/db", "seed-demo"]).unwrap();
        assert_eq!(seed.command(), Command::SeedDemo);
        seed.validate().unwrap();

        let bad_db = parse(&["--database-url", "mysql://x", "--redis-url", "redis://r"]).unwrap();
        assert_eq!(bad_db.validate().unwrap_err().setting, "DATABASE_URL");
        let bad_redis =
            parse(&["--database-url", "postgres://x", "--redis-url", "http://r"]).unwrap();
        assert_eq!(bad_redis.validate().unwrap_err().setting, "REDIS_URL");
        assert!(parse(&["--database-url", "postgres://x", "--cache-ttl-secs", "0"]).is_err());
    }
}
