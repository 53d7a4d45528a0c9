//! Survey service settings. The rules' settings are parsed by clap (a bad value exits 64 with a
//! message naming the variable); [`Config::validate`] checks the rest.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::TimeDelta;
use clap::builder::BoolishValueParser;
use clap::{Parser, Subcommand};
use jetmart_kit::{CommonArgs, ConfigError};

use crate::domain::{DEFAULT_MAX_COMMENT_CHARS, EligibilityConfig, SamplingRate};

#[derive(Debug, Clone, Parser)]
#[command(name = "jetmart-survey", version, about = "jetmart survey service")]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The survey service's own database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Base of the emailed link `<SURVEY_PUBLIC_URL>/s/<token>`: where this service's HTTP port
    /// is reachable by customers (http or https, no query or fragment). Required.
    // Optional for clap so that a missing value is reported by validate(), naming the variable.
    #[arg(long, env = "SURVEY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Minimum order total per currency, in minor units: `EUR:1000,USD:1000`. Orders in other
    /// currencies get no survey.
    #[arg(long, env = "SURVEY_MIN_ORDER", default_value = "EUR:1000,USD:1000", value_parser = parse_min_order)]
    pub min_order: MinOrder,
    /// Survey only the customer's first confirmed order (true|false).
    #[arg(long, env = "SURVEY_FIRST_ORDER_ONLY", default_value = "true", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub first_order_only: bool,
    /// Fraction of orders surveyed, 0 to 1, decided by a hash of the order id.
    #[arg(long, env = "SURVEY_SAMPLE_RATE", default_value = "1", value_parser = parse_sample_rate)]
    pub sample_rate: SamplingRate,
    /// At most one invitation per customer within this period (order time): `90d`, `12h`, `0`.
    #[arg(long, env = "SURVEY_COOLDOWN", default_value = "90d", value_parser = parse_cooldown)]
    pub cooldown: Period,
    /// How long a survey link stays valid: `14d`.
    #[arg(long, env = "SURVEY_TOKEN_TTL", default_value = "14d", value_parser = parse_token_ttl)]
    pub token_ttl: Period,
    /// Longest comment accepted, in characters.
    #[arg(long, env = "SURVEY_MAX_COMMENT_CHARS", default_value_t = DEFAULT_MAX_COMMENT_CHARS as u32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_comment_chars: u32,
    /// How often published survey.requested events (they carry the token) are removed from the
    /// outbox, so the database keeps only the token's hash.
    #[arg(long, env = "SURVEY_OUTBOX_SCRUB_INTERVAL", default_value = "10s", value_parser = parse_scrub_interval)]
    pub outbox_scrub_interval: Period,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
}

/// Minimum order totals per ISO 4217 currency, in minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinOrder(pub BTreeMap<String, i64>);

/// A non-negative period such as `90d` or `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period(pub Duration);

impl Period {
    pub fn as_delta(self) -> TimeDelta {
        TimeDelta::from_std(self.0).unwrap_or(TimeDelta::MAX)
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.common.validate()?;
        jetmart_kit::config::require_postgres_url("DATABASE_URL", &self.database_url)?;
        let url = self
            .public_url
            .as_deref()
            .ok_or_else(|| ConfigError::new("SURVEY_PUBLIC_URL", "is required"))?;
        validate_public_url(url).map_err(|problem| ConfigError::new("SURVEY_PUBLIC_URL", problem))
    }

    /// The eligibility rules.
    pub fn rules(&self) -> EligibilityConfig {
        EligibilityConfig {
            min_order_minor: self.min_order.0.clone(),
            first_order_only: self.first_order_only,
            sampling: self.sample_rate,
            cooldown: self.cooldown.as_delta(),
        }
    }

    /// The public base URL without a trailing slash.
    pub fn public_base(&self) -> String {
        let url = self.public_url.as_deref().unwrap_or_default();
        url.trim_end_matches('/').to_owned()
    }
}

fn validate_public_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{url:?} must be a plain base URL (no query, fragment or spaces)"
        ));
    }
    Ok(())
}

/// `EUR:1000,USD:1000`.
fn parse_min_order(s: &str) -> Result<MinOrder, String> {
    let mut map = BTreeMap::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (currency, amount) = entry.split_once(':').ok_or_else(|| {
            format!("SURVEY_MIN_ORDER: {entry:?} is not CURRENCY:MINOR_UNITS (e.g. EUR:1000)")
        })?;
        let currency = currency.trim();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "SURVEY_MIN_ORDER: {currency:?} is not an ISO 4217 code such as EUR"
            ));
        }
        let amount: i64 = amount.trim().parse().map_err(|_| {
            format!("SURVEY_MIN_ORDER: {amount:?} is not a whole number of minor units")
        })?;
        if amount < 0 {
            return Err(format!(
                "SURVEY_MIN_ORDER: the minimum for {currency} is negative"
            ));
        }
        if map.insert(currency.to_owned(), amount).is_some() {
            return Err(format!("SURVEY_MIN_ORDER: {currency} is listed twice"));
        }
    }
    if map.is_empty() {
        return Err("SURVEY_MIN_ORDER: list at least one CURRENCY:MINOR_UNITS".into());
    }
    Ok(MinOrder(map))
}

fn parse_sample_rate(s: &str) -> Result<SamplingRate, String> {
    let f: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("SURVEY_SAMPLE_RATE: {s:?} is not a number"))?;
    SamplingRate::from_fraction(f).map_err(|e| format!("SURVEY_SAMPLE_RATE: {e}"))
}

fn parse_cooldown(s: &str) -> Result<Period, String> {
    parse_period(s).map_err(|e| format!("SURVEY_COOLDOWN: {e}"))
}

fn parse_token_ttl(s: &str) -> Result<Period, String> {
    match parse_period(s) {
        Ok(p) if p.0.is_zero() => Err("SURVEY_TOKEN_TTL: must be longer than 0".into()),
        Ok(p) => Ok(p),
        Err(e) => Err(format!("SURVEY_TOKEN_TTL: {e}")),
    }
}

fn parse_scrub_interval(s: &str) -> Result<Period, String> {
    match parse_period(s) {
        Ok(p) if p.0 < Duration::from_millis(100) => {
            Err("SURVEY_OUTBOX_SCRUB_INTERVAL: must be at least 100ms".into())
        }
        Ok(p) => Ok(p),
        Err(e) => Err(format!("SURVEY_OUTBOX_SCRUB_INTERVAL: {e}")),
    }
}

/// `0`, or number+unit pairs (`ms`, `s`, `m`, `h`, `d`, `w`) such as `90d` or `1h30m`.
pub fn parse_period(s: &str) -> Result<Period, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Period(Duration::ZERO));
    }
    let bad = || format!("{s:?} is not a period such as 90d, 12h, 30m, 45s or 0");
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        if digits == 0 || unit_len == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit_secs: u64 = match &rest[digits..digits + unit_len] {
            "ms" => {
                total = total
                    .checked_add(Duration::from_millis(n))
                    .ok_or_else(bad)?;
                rest = &rest[digits + unit_len..];
                continue;
            }
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(bad()),
        };
        let secs = n.checked_mul(unit_secs).ok_or_else(bad)?;
        total = total
            .checked_add(Duration::from_secs(secs))
            .ok_or_else(bad)?;
        rest = &rest[digits + unit_len..];
    }
    // Beyond chrono's range would only mean "forever"; refuse it instead of guessing.
    TimeDelta::from_std(total).map_err(|_| bad())?;
    Ok(Period(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, clap::Error> {
        let base = [
            "jetmart-survey",
            "--database-url",
            "postgres://x@localhost/survey",
            "--public-url",
            "https://shop.example/",
        ];
        Config::try_parse_from(base.iter().chain(extra.iter()))
    }

    #[test]
    fn defaults_make_a_valid_config() {
        let c = parse(&[]).unwrap();
        c.validate().unwrap();
        let rules = c.rules();
        assert_eq!(rules.min_order_minor["EUR"], 1000);
        assert_eq!(rules.min_order_minor["USD"], 1000);
        assert!(rules.first_order_only);
        assert_eq!(rules.sampling, SamplingRate::ALL);
        assert_eq!(rules.cooldown, TimeDelta::days(90));
        assert_eq!(c.token_ttl.0, Duration::from_secs(14 * 86_400));
        assert_eq!(c.public_base(), "https://shop.example");
    }

    #[test]
    fn rules_are_read_from_flags() {
        let c = parse(&[
            "--min-order",
            " EUR:2500, JPY:3000 ",
            "--first-order-only",
            "false",
            "--sample-rate",
            "0.25",
            "--cooldown",
            "1d12h",
        ])
        .unwrap();
        let rules = c.rules();
        assert_eq!(
            rules.min_order_minor,
            [("EUR".to_string(), 2500), ("JPY".to_string(), 3000)].into()
        );
        assert!(!rules.first_order_only);
        assert_eq!(rules.sampling.fraction(), 0.25);
        assert_eq!(rules.cooldown, TimeDelta::hours(36));
        assert_eq!(parse_period("0").unwrap().0, Duration::ZERO);
        assert_eq!(parse_period("250ms").unwrap().0, Duration::from_millis(250));
    }

    #[test]
    fn bad_rules_are_refused_naming_the_setting() {
        for (flag, value, setting) in [
            ("--min-order", "EUR", "SURVEY_MIN_ORDER"),
            ("--min-order", "eur:100", "SURVEY_MIN_ORDER"),
            ("--min-order", "EUR:ten", "SURVEY_MIN_ORDER"),
            ("--min-order", "EUR:-1", "SURVEY_MIN_ORDER"),
            ("--min-order", "EUR:1,EUR:2", "SURVEY_MIN_ORDER"),
            ("--min-order", "", "SURVEY_MIN_ORDER"),
            ("--sample-rate", "1.5", "SURVEY_SAMPLE_RATE"),
            ("--sample-rate", "half", "SURVEY_SAMPLE_RATE"),
            ("--cooldown", "soon", "SURVEY_COOLDOWN"),
            ("--cooldown", "10", "SURVEY_COOLDOWN"),
            ("--cooldown", "5y", "SURVEY_COOLDOWN"),
            ("--token-ttl", "0", "SURVEY_TOKEN_TTL"),
        ] {
            let err = parse(&[flag, value]).unwrap_err().to_string();
            assert!(err.contains(setting), "{flag} {value:?}: {err}");
        }
        assert!(parse(&["--first-order-only", "maybe"]).is_err());
        assert!(parse(&["--max-comment-chars", "0"]).is_err());
    }

    #[test]
    fn public_url_must_be_a_plain_http_base() {
        for bad in [
            "ftp://x",
            "https://",
            "shop.example",
            "https://x/?a=1",
            "https://x/#f",
            "https://x y",
        ] {
            let c = Config::try_parse_from([
                "x",
                "--database-url",
                "postgres://x@h/d",
                "--public-url",
                bad,
            ])
            .unwrap();
            assert_eq!(
                c.validate().unwrap_err().setting,
                "SURVEY_PUBLIC_URL",
                "{bad}"
            );
        }
    }
}
