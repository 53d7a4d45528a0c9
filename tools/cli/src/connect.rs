//! Connections. Unlike a service, a command must fail fast when NATS is not there, so there is
//! no retry of the first connection (`jetmart_kit::nats::connect` retries forever).

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;

use crate::args::NatsArgs;

/// How long one connection attempt and one JetStream request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn nats(args: &NatsArgs) -> anyhow::Result<async_nats::Client> {
    let mut opts = match &args.nats_creds_file {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .with_context(|| format!("reading NATS credentials {}", path.display()))?,
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
    let servers = args
        .nats_url
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--nats-url {:?}", args.nats_url))?;
    opts.name("jetmartctl")
        .connection_timeout(TIMEOUT)
        .connect(servers)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", args.nats_url))
}

pub async fn jetstream(args: &NatsArgs) -> anyhow::Result<jetstream::Context> {
    let mut js = jetstream::new(nats(args).await?);
    js.set_timeout(TIMEOUT);
    Ok(js)
}
