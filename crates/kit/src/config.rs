//! Settings shared by every service, from flags or environment. Validated once at start: a bad
//! or missing setting exits with one line naming it and code 64 (EX_USAGE).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};

/// sysexits.h EX_USAGE.
pub const EXIT_USAGE: i32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON when stdout is not a terminal.
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// NATS server URL(s), comma separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// NATS credentials file (JWT + nkey).
    #[arg(long, env = "NATS_CREDS_FILE")]
    pub nats_creds_file: Option<PathBuf>,
    /// NATS user (with NATS_PASSWORD).
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// CA bundle to verify the NATS server; enables TLS.
    #[arg(long, env = "NATS_TLS_CA_FILE")]
    pub nats_tls_ca_file: Option<PathBuf>,
    #[arg(long, env = "NATS_TLS_CERT_FILE", requires = "nats_tls_key_file")]
    pub nats_tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "NATS_TLS_KEY_FILE", requires = "nats_tls_cert_file")]
    pub nats_tls_key_file: Option<PathBuf>,
    /// Replicas of the streams this service provisions (1 locally, 3 on Kubernetes).
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,
    /// gRPC listen address.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// HTTP listen address for /healthz, /readyz and /metrics.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Seconds to drain in-flight work after SIGTERM/SIGINT before exiting.
    #[arg(long, env = "SHUTDOWN_DEADLINE_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_deadline_secs: u64,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Most events a consumer applies in one transaction when they queue up (1: one at a
    /// time). Used only by consumers whose whole effect is in the service's database.
    #[arg(long, env = "CONSUMER_BATCH", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub consumer_batch: u16,
}

impl CommonArgs {
    pub fn shutdown_deadline(&self) -> Duration {
        Duration::from_secs(self.shutdown_deadline_secs)
    }

    /// Checks what clap cannot: combinations and URL shapes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for url in self.nats_url.split(',') {
            let url = url.trim();
            let ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|p| url.starts_with(p))
                || (!url.is_empty() && !url.contains("://"));
            if !ok {
                return Err(ConfigError::new(
                    "NATS_URL",
                    format!("{url:?} is not a nats:// or tls:// URL"),
                ));
            }
        }
        if self.nats_user.is_some() != self.nats_password.is_some() {
            return Err(ConfigError::new(
                "NATS_USER",
                "NATS_USER and NATS_PASSWORD go together",
            ));
        }
        if self.nats_creds_file.is_some() && self.nats_user.is_some() {
            return Err(ConfigError::new(
                "NATS_CREDS_FILE",
                "use a creds file or user/password, not both",
            ));
        }
        for (name, path) in [
            ("NATS_CREDS_FILE", &self.nats_creds_file),
            ("NATS_TLS_CA_FILE", &self.nats_tls_ca_file),
            ("NATS_TLS_CERT_FILE", &self.nats_tls_cert_file),
            ("NATS_TLS_KEY_FILE", &self.nats_tls_key_file),
        ] {
            if let Some(p) = path
                && !p.is_file()
            {
                return Err(ConfigError::new(
                    name,
                    format!("{} is not a readable file", p.display()),
                ));
            }
        }
        Ok(())
    }
}

/// A setting that is wrong, named by its environment variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

impl ConfigError {
    pub fn new(setting: &'static str, problem: impl Into<String>) -> Self {
        Self {
            setting,
            problem: problem.into(),
        }
    }
}

/// Validates a `postgres://` URL setting.
pub fn require_postgres_url(setting: &'static str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(())
    } else {
        Err(ConfigError::new(setting, "expected a postgres:// URL"))
    }
}

/// Validates a `redis://` or `rediss://` URL setting.
pub fn require_redis_url(setting: &'static str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(())
    } else {
        Err(ConfigError::new(
            setting,
            "expected a redis:// or rediss:// URL",
        ))
    }
}

/// Parses flags and environment; on error prints one line and exits 64 (help and version exit 0).
pub fn parse_or_exit<T: Parser>() -> T {
    match T::try_parse() {
        Ok(config) => config,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit();
            }
            if e.kind() == ErrorKind::MissingRequiredArgument
                && let Some(clap::error::ContextValue::Strings(missing)) =
                    e.get(clap::error::ContextKind::InvalidArg)
            {
                // Name the missing setting (its environment variable is in --help).
                eprintln!(
                    "{}: missing required setting {}",
                    binary_name(),
                    missing.join(", ")
                );
                std::process::exit(EXIT_USAGE);
            }
            let rendered = e.render().to_string();
            let line = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            eprintln!("{}: {}", binary_name(), line.trim_start_matches("error: "));
            std::process::exit(EXIT_USAGE);
        }
    }
}

/// Prints a validation error in the same one-line form and exits 64.
pub fn exit_invalid(e: &ConfigError) -> ! {
    eprintln!("{}: {e}", binary_name());
    std::process::exit(EXIT_USAGE)
}

fn binary_name() -> String {
    std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "jetmart".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct T {
        #[command(flatten)]
        common: CommonArgs,
    }

    fn parse(args: &[&str]) -> Result<CommonArgs, clap::Error> {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map(|t| t.common)
    }

    #[test]
    fn defaults_are_valid() {
        let c = parse(&[]).unwrap();
        c.validate().unwrap();
        assert_eq!(c.stream_replicas, 1);
        assert_eq!(c.shutdown_deadline(), Duration::from_secs(20));
    }

    #[test]
    fn bad_settings_are_named() {
        assert!(parse(&["--stream-replicas", "0"]).is_err());
        assert!(parse(&["--grpc-addr", "nowhere"]).is_err());
        let c = parse(&["--nats-url", "http://x"]).unwrap();
        assert_eq!(c.validate().unwrap_err().setting, "NATS_URL");
        let c = parse(&["--nats-user", "u"]).unwrap();
        assert_eq!(c.validate().unwrap_err().setting, "NATS_USER");
        let c = parse(&["--nats-creds-file", "/nonexistent"]).unwrap();
        assert_eq!(c.validate().unwrap_err().setting, "NATS_CREDS_FILE");
        assert!(require_postgres_url("DATABASE_URL", "mysql://x").is_err());
        assert!(require_redis_url("REDIS_URL", "rediss://r:6380/1").is_ok());
        assert_eq!(
            require_redis_url("REDIS_URL", "http://r")
                .unwrap_err()
                .setting,
            "REDIS_URL"
        );
    }
}
