//! NATS connection from the common settings: credentials, TLS, endless reconnects.

use crate::config::CommonArgs;

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("NATS_CREDS_FILE: {0}")]
    Creds(std::io::Error),
    #[error("cannot connect to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
}

/// Connects, retrying the first connection in the background: the service starts and reports
/// not-ready until NATS answers.
pub async fn connect(service: &str, args: &CommonArgs) -> Result<async_nats::Client, NatsError> {
    let mut opts = match &args.nats_creds_file {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(NatsError::Creds)?,
        None => match (&args.nats_user, &args.nats_password) {
            (Some(u), Some(p)) => {
                async_nats::ConnectOptions::with_user_and_password(u.clone(), p.clone())
            }
            _ => async_nats::ConnectOptions::new(),
        },
    };
    if let Some(ca) = &args.nats_tls_ca_file {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&args.nats_tls_cert_file, &args.nats_tls_key_file) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    let service = service.to_owned();
    let opts = opts
        .name(&service)
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let service = service.clone();
            async move {
                match event {
                    async_nats::Event::Connected => tracing::info!(service, "nats connected"),
                    async_nats::Event::Disconnected => tracing::warn!(service, "nats disconnected"),
                    other => tracing::debug!(service, event = %other, "nats event"),
                }
            }
        });
    // A comma-separated list names the nodes of a cluster; any one of them is a way in.
    let servers = args
        .nats_url
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            NatsError::Connect(async_nats::ConnectError::with_source(
                async_nats::ConnectErrorKind::ServerParse,
                e,
            ))
        })?;
    Ok(opts.connect(servers).await?)
}
