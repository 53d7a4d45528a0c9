//! Notification service settings.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use jetmart_kit::{CommonArgs, ConfigError};
use lettre::message::Mailbox;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "jetmart-notification",
    version,
    about = "jetmart notification service"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The notification service's own database (required).
    // Optional for clap so a missing value is reported by validate() naming DATABASE_URL: the
    // kit's one-line clap error drops the names of missing required arguments.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// SMTP relay (required): smtp://host[:port] (plain, or STARTTLS with SMTP_STARTTLS=true;
    /// port 25 by default) or smtps://host[:port] (TLS from the first byte; port 465 by default).
    #[arg(long, env = "SMTP_URL")]
    pub smtp_url: Option<String>,
    /// Require STARTTLS on an smtp:// relay (true|false).
    #[arg(long, env = "SMTP_STARTTLS", default_value_t = false, action = ArgAction::Set,
          value_parser = clap::builder::BoolValueParser::new())]
    pub smtp_starttls: bool,
    /// SMTP AUTH user name (with SMTP_PASSWORD); none means no AUTH.
    #[arg(long, env = "SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    /// SMTP AUTH password.
    #[arg(long, env = "SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<Secret>,
    /// Sender of every email, e.g. `jetmart <no-reply@jetmart.example>`.
    #[arg(
        long,
        env = "SMTP_FROM",
        default_value = "jetmart <no-reply@jetmart.localhost>"
    )]
    pub smtp_from: String,
    /// Timeout of each SMTP connection attempt and command.
    #[arg(long, env = "SMTP_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=120))]
    pub smtp_timeout_secs: u64,
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

/// A setting that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain text (local sinks only).
    None,
    /// STARTTLS required: a relay that does not offer it is an error, never a plain fallback.
    StartTls,
    /// TLS from the first byte (smtps://).
    Tls,
}

/// Everything the SMTP client needs, validated.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub credentials: Option<(String, Secret)>,
    pub from: Mailbox,
    pub timeout: Duration,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.common.validate()?;
        jetmart_kit::config::require_postgres_url("DATABASE_URL", self.database_url()?)?;
        let smtp = self.smtp()?;
        if smtp.security != SmtpSecurity::None {
            // Fails on a host name TLS cannot verify; better at start than on every send.
            lettre::transport::smtp::client::TlsParameters::new(smtp.host.clone())
                .map_err(|e| ConfigError::new("SMTP_URL", format!("TLS set-up: {e}")))?;
        }
        Ok(())
    }

    pub fn database_url(&self) -> Result<&str, ConfigError> {
        required("DATABASE_URL", self.database_url.as_deref())
    }

    /// The SMTP settings, or the first bad one.
    pub fn smtp(&self) -> Result<SmtpSettings, ConfigError> {
        let (host, port, smtps) = parse_smtp_url(required("SMTP_URL", self.smtp_url.as_deref())?)?;
        let security = match (smtps, self.smtp_starttls) {
            (true, _) => SmtpSecurity::Tls,
            (false, true) => SmtpSecurity::StartTls,
            (false, false) => SmtpSecurity::None,
        };
        let username = self.smtp_username.clone().filter(|u| !u.is_empty());
        let password = self.smtp_password.clone().filter(|p| !p.0.is_empty());
        let credentials = match (username, password) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "SMTP_PASSWORD",
                    "SMTP_USERNAME is set, SMTP_PASSWORD is missing",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "SMTP_USERNAME",
                    "SMTP_PASSWORD is set, SMTP_USERNAME is missing",
                ));
            }
        };
        let from: Mailbox = self.smtp_from.parse().map_err(|e| {
            ConfigError::new(
                "SMTP_FROM",
                format!("{:?} is not a mailbox: {e}", self.smtp_from),
            )
        })?;
        Ok(SmtpSettings {
            host,
            port,
            security,
            credentials,
            from,
            timeout: Duration::from_secs(self.smtp_timeout_secs),
        })
    }
}

fn required<'a>(setting: &'static str, value: Option<&'a str>) -> Result<&'a str, ConfigError> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ConfigError::new(setting, "is required"))
}

/// `smtp[s]://host[:port][/]` -> (host, port, smtps). Credentials in the URL are refused: they
/// belong in SMTP_USERNAME / SMTP_PASSWORD, which are never logged.
fn parse_smtp_url(url: &str) -> Result<(String, u16, bool), ConfigError> {
    let bad = |problem: String| ConfigError::new("SMTP_URL", problem);
    let (rest, smtps) = if let Some(r) = url.strip_prefix("smtp://") {
        (r, false)
    } else if let Some(r) = url.strip_prefix("smtps://") {
        (r, true)
    } else {
        return Err(bad(format!("{url:?} is not an smtp:// or smtps:// URL")));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('@') {
        return Err(bad(
            "credentials go in SMTP_USERNAME and SMTP_PASSWORD, not in the URL".into(),
        ));
    }
    if authority.contains(['/', '?', '#']) || authority.chars().any(char::is_whitespace) {
        return Err(bad(format!(
            "{url:?} must be smtp://host:port, without path or query"
        )));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad(format!("{url:?} has an unclosed [ipv6] host")))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad(format!("{url:?} has no host")));
    }
    let port = match port {
        None => {
            if smtps {
                465
            } else {
                25
            }
        }
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(format!("{url:?} has an invalid port")))?,
    };
    Ok((host.to_owned(), port, smtps))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, clap::Error> {
        let base = [
            "jetmart-notification",
            "--database-url",
            "postgres://u@localhost/n",
            "--smtp-url",
            "smtp://127.0.0.1:1025",
        ];
        Config::try_parse_from(base.iter().chain(args.iter()).copied())
    }

    #[test]
    fn defaults_are_plain_smtp_without_auth() {
        let c = config(&[]).unwrap();
        c.validate().unwrap();
        let s = c.smtp().unwrap();
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 1025));
        assert_eq!(s.security, SmtpSecurity::None);
        assert!(s.credentials.is_none());
        assert_eq!(s.from.email.to_string(), "no-reply@jetmart.localhost");
        assert_eq!(s.timeout, Duration::from_secs(10));
    }

    #[test]
    fn urls_ports_and_tls_modes() {
        assert_eq!(
            parse_smtp_url("smtp://mail.example").unwrap(),
            ("mail.example".into(), 25, false)
        );
        assert_eq!(
            parse_smtp_url("smtps://mail.example/").unwrap(),
            ("mail.example".into(), 465, true)
        );
        assert_eq!(
            parse_smtp_url("smtp://[::1]:2525").unwrap(),
            ("::1".into(), 2525, false)
        );
        for bad in [
            "http://x:25",
            "smtp://",
            "smtp://:25",
            "smtp://x:0",
            "smtp://x:99999",
            "smtp://x:25/path",
            "smtp://user:pw@x:25",
            "smtp://[::1:25",
        ] {
            let e = parse_smtp_url(bad).unwrap_err();
            assert_eq!(e.setting, "SMTP_URL", "{bad}");
        }
        let c = config(&["--smtp-starttls", "true"]).unwrap();
        assert_eq!(c.smtp().unwrap().security, SmtpSecurity::StartTls);
        c.validate().unwrap();
        assert!(config(&["--smtp-starttls", "yes"]).is_err());
    }

    #[test]
    fn credentials_go_together_and_the_password_is_never_printed() {
        let c = config(&["--smtp-username", "mailer"]).unwrap();
        assert_eq!(c.validate().unwrap_err().setting, "SMTP_PASSWORD");
        let c = config(&["--smtp-password", "hunter2"]).unwrap();
        assert_eq!(c.validate().unwrap_err().setting, "SMTP_USERNAME");
        let c = config(&["--smtp-username", "mailer", "--smtp-password", "hunter2"]).unwrap();
        let s = c.smtp().unwrap();
        let (user, password) = s.credentials.clone().unwrap();
        assert_eq!((user.as_str(), password.expose()), ("mailer", "hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn missing_urls_are_named() {
        let c = Config::try_parse_from(["x", "--smtp-url", "smtp://h:25"]).unwrap();
        assert_eq!(c.validate().unwrap_err().setting, "DATABASE_URL");
        let c = Config::try_parse_from(["x", "--database-url", "postgres://h/d"]).unwrap();
        assert_eq!(c.validate().unwrap_err().setting, "SMTP_URL");
    }

    #[test]
    fn sender_must_be_a_mailbox() {
        let c = config(&["--smtp-from", "not a mailbox"]).unwrap();
        assert_eq!(c.validate().unwrap_err().setting, "SMTP_FROM");
        let c = config(&["--smtp-from", "Shop <shop@jetmart.test>"]).unwrap();
        assert_eq!(
            c.smtp().unwrap().from.to_string(),
            "Shop <shop@jetmart.test>"
        );
    }
}
