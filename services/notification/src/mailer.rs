//! The SMTP adapter: lettre's pooled async transport, and the mapping of its errors to the
//! domain's [`SmtpFailure`] (which decides retry or give up).

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::{self, PoolConfig};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpSecurity, SmtpSettings};
use crate::domain::{RenderedEmail, SmtpFailure};

/// Idle SMTP connections kept for reuse; more are opened when more sends run concurrently.
const POOL_SIZE: u32 = 8;

/// Sends rendered emails to the configured relay.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("SMTP TLS set-up for {host}: {source}")]
pub struct MailerError {
    host: String,
    source: smtp::Error,
}

impl Mailer {
    /// Builds the pooled transport; connections are made on the first send. Must run inside a
    /// Tokio runtime (the pool's reaper is a task).
    pub fn new(settings: &SmtpSettings) -> Result<Mailer, MailerError> {
        let tls_params = || {
            TlsParameters::new(settings.host.clone()).map_err(|source| MailerError {
                host: settings.host.clone(),
                source,
            })
        };
        let tls = match settings.security {
            SmtpSecurity::None => Tls::None,
            SmtpSecurity::StartTls => Tls::Required(tls_params()?),
            SmtpSecurity::Tls => Tls::Wrapper(tls_params()?),
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.as_str())
                .port(settings.port)
                .tls(tls)
                .timeout(Some(settings.timeout))
                .pool_config(PoolConfig::new().max_size(POOL_SIZE));
        if let Some((user, password)) = &settings.credentials {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(Mailer {
            transport: builder.build(),
            from: settings.from.clone(),
        })
    }

    /// Sends `email` to `to` with the given Message-ID. `Ok` means the relay accepted it (250
    /// after DATA). `tags` become `X-Jetmart-*` headers (order id, template, survey id) so a
    /// mailbox can be reconciled with orders without parsing the body.
    pub async fn send(
        &self,
        to: &str,
        message_id: &str,
        email: &RenderedEmail,
        tags: &[(&'static str, String)],
    ) -> Result<(), SmtpFailure> {
        let to: Address = to
            .parse()
            .map_err(|e| SmtpFailure::InvalidMessage(format!("recipient address: {e}")))?;
        let mut builder = Message::builder().message_id(Some(message_id.to_owned()));
        for (name, value) in tags {
            builder = builder.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value.clone(),
            ));
        }
        let message = builder
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(email.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            .map_err(|e| SmtpFailure::InvalidMessage(e.to_string()))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| failure(&e))
    }
}

/// What a lettre error means for the email.
fn failure(e: &smtp::Error) -> SmtpFailure {
    if let Some(code) = e.status() {
        return SmtpFailure::Reply {
            code: code.into(),
            message: e.to_string(),
        };
    }
    if e.is_timeout() {
        return SmtpFailure::Timeout;
    }
    if e.is_tls() {
        return SmtpFailure::Tls(e.to_string());
    }
    if io_kind(e) == Some(std::io::ErrorKind::ConnectionRefused) {
        return SmtpFailure::ConnectionRefused;
    }
    // lettre's client errors are mostly about the session (no AUTH mechanism in common, a
    // malformed reply): retried, so nothing is lost while the relay is fixed. The one about the
    // message itself is an address or body the relay cannot carry (no SMTPUTF8 / 8BITMIME).
    let text = e.to_string();
    if e.is_client() && text.contains("non-ascii") {
        return SmtpFailure::InvalidMessage(text);
    }
    SmtpFailure::Network(text)
}

fn io_kind(e: &smtp::Error) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = err.source();
    }
    None
}
