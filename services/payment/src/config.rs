//! Payment service settings: the common ones, the database, the gateway (simulated for now),
//! retries, the circuit breaker and how long events may wait in the stream.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jetmart_kit::{CommonArgs, ConfigError};

use crate::domain::{BreakerConfig, DeclineReason, RetryPolicy, SimulatedGatewayConfig};

#[derive(Debug, Clone, Parser)]
#[command(name = "jetmart-payment", version, about = "jetmart payment service")]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// The payment database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub retry: RetryArgs,
    #[command(flatten)]
    pub breaker: BreakerArgs,
    #[command(flatten)]
    pub redelivery: RedeliveryArgs,
    /// How long an authorization may take, from the payment's creation, before payment gives
    /// up: the payment is declined as GATEWAY_UNAVAILABLE, and the order is cancelled and its
    /// stock released. Milliseconds.
    #[arg(long, env = "PAYMENT_AUTHORIZE_DEADLINE_MS", default_value_t = 120_000)]
    pub authorize_deadline_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Run the database migrations and exit.
    Migrate,
}

/// Which payment provider to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GatewayKind {
    /// The in-process simulated provider (the only one so far).
    Simulated,
}

#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Payment gateway implementation.
    #[arg(long = "payment-gateway", env = "PAYMENT_GATEWAY", value_enum, default_value_t = GatewayKind::Simulated)]
    pub kind: GatewayKind,
    /// Simulated gateway: shortest call latency, milliseconds.
    #[arg(long, env = "PAYMENT_SIMULATED_LATENCY_MIN_MS", default_value_t = 0)]
    pub simulated_latency_min_ms: u64,
    /// Simulated gateway: longest call latency, milliseconds.
    #[arg(long, env = "PAYMENT_SIMULATED_LATENCY_MAX_MS", default_value_t = 0)]
    pub simulated_latency_max_ms: u64,
    /// Simulated gateway: probability (0..=1) that a call fails transiently.
    #[arg(long, env = "PAYMENT_SIMULATED_FAILURE_RATE", default_value_t = 0.0)]
    pub simulated_failure_rate: f64,
    /// Simulated gateway: seed of the latency/failure RNG (random when unset).
    #[arg(long, env = "PAYMENT_SIMULATED_SEED")]
    pub simulated_seed: Option<u64>,
    /// Simulated gateway: per-currency limits in minor units, `EUR=1000000,JPY=10000`; amounts
    /// above are declined (AMOUNT_ABOVE_LIMIT). Empty: no limits.
    #[arg(long, env = "PAYMENT_SIMULATED_DECLINE_ABOVE", default_value_t = DeclineLimits::default())]
    pub simulated_decline_above: DeclineLimits,
    /// Simulated gateway: extra test tokens that are always declined, `tok_x=CARD_DECLINED,...`
    /// (`tok_decline` and `tok_insufficient_funds` are built in; `tok_transient` always fails).
    #[arg(long, env = "PAYMENT_SIMULATED_DECLINE_TOKENS", default_value_t = DeclineTokens::default())]
    pub simulated_decline_tokens: DeclineTokens,
}

#[derive(Debug, Clone, Args)]
pub struct RetryArgs {
    /// Gateway calls per event delivery, the first included, before the event is handed back
    /// to the stream for a later redelivery.
    #[arg(long, env = "PAYMENT_RETRY_MAX_ATTEMPTS", default_value_t = RetryPolicy::default().max_attempts,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub retry_max_attempts: u32,
    /// First backoff ceiling in milliseconds (doubles per failure, with jitter).
    #[arg(long, env = "PAYMENT_RETRY_BASE_DELAY_MS", default_value_t = millis(RetryPolicy::default().base_delay))]
    pub retry_base_delay_ms: u64,
    /// Largest backoff in milliseconds.
    #[arg(long, env = "PAYMENT_RETRY_MAX_DELAY_MS", default_value_t = millis(RetryPolicy::default().max_delay))]
    pub retry_max_delay_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct BreakerArgs {
    /// Consecutive transient gateway failures that open the circuit breaker.
    #[arg(long, env = "PAYMENT_BREAKER_FAILURE_THRESHOLD", default_value_t = BreakerConfig::default().failure_threshold,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub breaker_failure_threshold: u32,
    /// How long the open breaker refuses calls before one trial call, milliseconds.
    #[arg(long, env = "PAYMENT_BREAKER_COOL_DOWN_MS", default_value_t = millis(BreakerConfig::default().cool_down))]
    pub breaker_cool_down_ms: u64,
}

/// How events that could not be handled yet (gateway down, breaker open) wait in the stream.
#[derive(Debug, Clone, Args)]
pub struct RedeliveryArgs {
    /// Deliveries of one event before it is dead-lettered. High, so that events outlast a
    /// gateway outage: with the backoff cap, 50 deliveries are more than 20 minutes.
    #[arg(long, env = "PAYMENT_MAX_DELIVER", default_value_t = 50,
          value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub max_deliver: i64,
    /// First redelivery delay of a failed event, milliseconds (doubles, with jitter).
    #[arg(long, env = "PAYMENT_REDELIVERY_INITIAL_MS", default_value_t = 250)]
    pub redelivery_initial_ms: u64,
    /// Largest redelivery delay, milliseconds.
    #[arg(long, env = "PAYMENT_REDELIVERY_MAX_MS", default_value_t = 30_000)]
    pub redelivery_max_ms: u64,
}

const fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Longest latency, backoff or cool-down accepted, milliseconds (one hour).
const MAX_MS: u64 = 3_600_000;

impl Config {
    /// Checks what clap cannot: ranges between settings and URL shapes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.common.validate()?;
        jetmart_kit::config::require_postgres_url("DATABASE_URL", &self.database_url)?;
        let g = &self.gateway;
        at_most(
            "PAYMENT_SIMULATED_LATENCY_MAX_MS",
            g.simulated_latency_max_ms,
            60_000,
        )?;
        if g.simulated_latency_min_ms > g.simulated_latency_max_ms {
            return Err(ConfigError::new(
                "PAYMENT_SIMULATED_LATENCY_MIN_MS",
                format!(
                    "{} is above PAYMENT_SIMULATED_LATENCY_MAX_MS ({})",
                    g.simulated_latency_min_ms, g.simulated_latency_max_ms
                ),
            ));
        }
        let rate = g.simulated_failure_rate;
        if !(0.0..=1.0).contains(&rate) {
            return Err(ConfigError::new(
                "PAYMENT_SIMULATED_FAILURE_RATE",
                format!("{rate} is not a probability between 0 and 1"),
            ));
        }
        let r = &self.retry;
        at_most("PAYMENT_RETRY_MAX_DELAY_MS", r.retry_max_delay_ms, 60_000)?;
        if r.retry_base_delay_ms > r.retry_max_delay_ms {
            return Err(ConfigError::new(
                "PAYMENT_RETRY_BASE_DELAY_MS",
                format!(
                    "{} is above PAYMENT_RETRY_MAX_DELAY_MS ({})",
                    r.retry_base_delay_ms, r.retry_max_delay_ms
                ),
            ));
        }
        let cool_down = self.breaker.breaker_cool_down_ms;
        at_most("PAYMENT_BREAKER_COOL_DOWN_MS", cool_down, MAX_MS)?;
        if cool_down == 0 {
            return Err(ConfigError::new(
                "PAYMENT_BREAKER_COOL_DOWN_MS",
                "must be at least 1 ms",
            ));
        }
        at_most(
            "PAYMENT_AUTHORIZE_DEADLINE_MS",
            self.authorize_deadline_ms,
            MAX_MS,
        )?;
        if self.authorize_deadline_ms < 100 {
            return Err(ConfigError::new(
                "PAYMENT_AUTHORIZE_DEADLINE_MS",
                "must be at least 100 ms",
            ));
        }
        let d = &self.redelivery;
        at_most("PAYMENT_REDELIVERY_MAX_MS", d.redelivery_max_ms, MAX_MS)?;
        if d.redelivery_initial_ms == 0 || d.redelivery_initial_ms > d.redelivery_max_ms {
            return Err(ConfigError::new(
                "PAYMENT_REDELIVERY_INITIAL_MS",
                format!(
                    "{} must be at least 1 and at most PAYMENT_REDELIVERY_MAX_MS ({})",
                    d.redelivery_initial_ms, d.redelivery_max_ms
                ),
            ));
        }
        Ok(())
    }

    /// The simulated gateway's configuration.
    pub fn simulated_gateway(&self) -> SimulatedGatewayConfig {
        let g = &self.gateway;
        SimulatedGatewayConfig {
            latency_min: Duration::from_millis(g.simulated_latency_min_ms),
            latency_max: Duration::from_millis(g.simulated_latency_max_ms),
            transient_failure_rate: g.simulated_failure_rate,
            seed: g.simulated_seed.unwrap_or_else(rand::random),
            decline_above_minor: g.simulated_decline_above.0.clone(),
            decline_tokens: g.simulated_decline_tokens.0.clone(),
        }
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.retry.retry_max_attempts,
            base_delay: Duration::from_millis(self.retry.retry_base_delay_ms),
            max_delay: Duration::from_millis(self.retry.retry_max_delay_ms),
        }
    }

    pub fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: self.breaker.breaker_failure_threshold,
            cool_down: Duration::from_millis(self.breaker.breaker_cool_down_ms),
        }
    }
}

fn at_most(setting: &'static str, value: u64, max: u64) -> Result<(), ConfigError> {
    if value > max {
        Err(ConfigError::new(
            setting,
            format!("{value} is above the maximum {max}"),
        ))
    } else {
        Ok(())
    }
}

/// `CUR=limit,...` (minor units per ISO 4217 currency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclineLimits(pub BTreeMap<String, i64>);

impl Default for DeclineLimits {
    /// The simulated gateway's own defaults.
    fn default() -> Self {
        DeclineLimits(SimulatedGatewayConfig::default().decline_above_minor)
    }
}

impl fmt::Display for DeclineLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(c, l)| format!("{c}={l}")).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for DeclineLimits {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut limits = BTreeMap::new();
        for (currency, limit) in pairs(s)? {
            if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
                return Err(format!("{currency:?} is not an ISO 4217 code like EUR"));
            }
            let limit: i64 = limit.parse().ok().filter(|l| *l >= 0).ok_or_else(|| {
                format!("limit {limit:?} of {currency} is not a minor-unit amount >= 0")
            })?;
            limits.insert(currency.to_owned(), limit);
        }
        Ok(DeclineLimits(limits))
    }
}

/// `token=REASON,...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclineTokens(pub BTreeMap<String, DeclineReason>);

impl fmt::Display for DeclineTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(t, r)| format!("{t}={r}")).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for DeclineTokens {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut tokens = BTreeMap::new();
        for (token, reason) in pairs(s)? {
            let reason: DeclineReason = reason.parse().map_err(|e| {
                let names: Vec<&str> = DeclineReason::ALL.iter().map(|r| r.as_str()).collect();
                format!("{e} (one of {})", names.join(", "))
            })?;
            tokens.insert(token.to_owned(), reason);
        }
        Ok(DeclineTokens(tokens))
    }
}

/// `k=v,k=v`; blank means none.
fn pairs(s: &str) -> Result<Vec<(&str, &str)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                .ok_or_else(|| format!("{p:?} is not key=value"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, clap::Error> {
        let base = [
            "jetmart-payment",
            "--database-url",
            "postgres://x@localhost/p",
        ];
        Config::try_parse_from(base.iter().chain(extra.iter()).copied())
    }

    fn invalid(extra: &[&str]) -> &'static str {
        parse(extra).unwrap().validate().unwrap_err().setting
    }

    #[test]
    fn defaults_are_valid_and_match_the_domain_defaults() {
        let c = parse(&[]).unwrap();
        c.validate().unwrap();
        assert_eq!(c.gateway.kind, GatewayKind::Simulated);
        assert_eq!(c.retry_policy(), RetryPolicy::default());
        assert_eq!(c.breaker(), BreakerConfig::default());
        let sim = c.simulated_gateway();
        let default = SimulatedGatewayConfig::default();
        assert_eq!(sim.decline_above_minor, default.decline_above_minor);
        assert_eq!(sim.transient_failure_rate, 0.0);
        assert!(c.command.is_none());
        assert_eq!(parse(&["migrate"]).unwrap().command, Some(Command::Migrate));
    }

    #[test]
    fn decline_rules_parse() {
        let c = parse(&[
            "--simulated-decline-above",
            "EUR=500, USD=0",
            "--simulated-decline-tokens",
            "tok_fraud=CARD_DECLINED,tok_poor=INSUFFICIENT_FUNDS",
        ])
        .unwrap();
        let sim = c.simulated_gateway();
        assert_eq!(
            sim.decline_above_minor,
            BTreeMap::from([("EUR".into(), 500), ("USD".into(), 0)])
        );
        assert_eq!(
            sim.decline_tokens.get("tok_poor"),
            Some(&DeclineReason::InsufficientFunds)
        );
        assert!(
            parse(&["--simulated-decline-above", ""])
                .unwrap()
                .gateway
                .simulated_decline_above
                .0
                .is_empty()
        );
        // Display round-trips (clap renders defaults with it).
        let limits = DeclineLimits::default();
        assert_eq!(limits.to_string().parse::<DeclineLimits>().unwrap(), limits);
    }

    #[test]
    fn malformed_values_are_refused_by_the_parser() {
        for args in [
            &["--payment-gateway", "stripe"][..],
            &["--simulated-decline-above", "euro=5"],
            &["--simulated-decline-above", "EUR=-5"],
            &["--simulated-decline-above", "EUR"],
            &["--simulated-decline-tokens", "tok=NOPE"],
            &["--retry-max-attempts", "0"],
            &["--breaker-failure-threshold", "0"],
            &["--simulated-failure-rate", "lots"],
            &["--max-deliver", "0"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
        assert!(
            Config::try_parse_from(["jetmart-payment"]).is_err(),
            "DATABASE_URL is required"
        );
    }

    #[test]
    fn inconsistent_values_are_named() {
        assert_eq!(
            invalid(&["--simulated-failure-rate", "1.5"]),
            "PAYMENT_SIMULATED_FAILURE_RATE"
        );
        assert_eq!(
            invalid(&["--simulated-failure-rate", "NaN"]),
            "PAYMENT_SIMULATED_FAILURE_RATE"
        );
        assert_eq!(
            invalid(&[
                "--simulated-latency-min-ms",
                "50",
                "--simulated-latency-max-ms",
                "10"
            ]),
            "PAYMENT_SIMULATED_LATENCY_MIN_MS"
        );
        assert_eq!(
            invalid(&[
                "--retry-base-delay-ms",
                "500",
                "--retry-max-delay-ms",
                "100"
            ]),
            "PAYMENT_RETRY_BASE_DELAY_MS"
        );
        assert_eq!(
            invalid(&["--breaker-cool-down-ms", "0"]),
            "PAYMENT_BREAKER_COOL_DOWN_MS"
        );
        assert_eq!(
            invalid(&["--redelivery-initial-ms", "0"]),
            "PAYMENT_REDELIVERY_INITIAL_MS"
        );
        let c = Config::try_parse_from(["x", "--database-url", "mysql://x"]).unwrap();
        assert_eq!(c.validate().unwrap_err().setting, "DATABASE_URL");
    }
}
