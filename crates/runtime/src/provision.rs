//! Idempotent stream and durable consumer provisioning, run by every service at start-up.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, stream};

use crate::catalog::StreamSpec;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("consumer {consumer} on {stream}: {message}")]
    Consumer {
        stream: String,
        consumer: String,
        message: String,
    },
}

/// How streams are stored. Replicas: 1 locally, 3 on Kubernetes.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub replicas: usize,
    /// JetStream drops a re-published `Nats-Msg-Id` seen within this window. It must exceed the
    /// longest time a relay can take to re-send after a crash.
    pub duplicate_window: Duration,
    pub max_age: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            duplicate_window: Duration::from_secs(10 * 60),
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Creates each stream, or updates it to the wanted settings when it exists.
pub async fn ensure_streams(
    js: &jetstream::Context,
    specs: &[StreamSpec],
    settings: &StreamSettings,
) -> Result<(), ProvisionError> {
    for spec in specs {
        let config = stream::Config {
            name: spec.name.into(),
            subjects: spec.subjects.iter().map(|s| (*s).to_owned()).collect(),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: settings.replicas,
            duplicate_window: settings.duplicate_window,
            max_age: settings.max_age,
            allow_direct: true,
            ..Default::default()
        };
        // Two services starting together may race on creation; the loser's second try updates.
        let mut last = String::new();
        for _ in 0..3 {
            match js.create_or_update_stream(config.clone()).await {
                Ok(_) => {
                    last.clear();
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        if !last.is_empty() {
            return Err(ProvisionError::Stream {
                stream: spec.name.into(),
                message: last,
            });
        }
    }
    Ok(())
}

/// A durable pull consumer shared by every replica of one service.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub stream: String,
    /// The consuming service's name.
    pub durable: String,
    pub filter_subjects: Vec<String>,
    /// Redelivery happens this long after a delivery that was neither acked nor nacked (a crash).
    pub ack_wait: Duration,
    /// Bound on unacknowledged messages across all replicas.
    pub max_ack_pending: i64,
}

impl ConsumerSpec {
    pub fn new(stream: &StreamSpec, durable: &str, filter_subjects: &[&str]) -> Self {
        Self {
            stream: stream.name.into(),
            durable: durable.into(),
            filter_subjects: filter_subjects.iter().map(|s| (*s).to_owned()).collect(),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1000,
        }
    }
}

/// Creates or updates the durable consumer. Delivery attempts are unlimited on the server: the
/// runner itself dead-letters past its own limit, so a message is never dropped silently.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
) -> Result<PullConsumer, ProvisionError> {
    let err = |message: String| ProvisionError::Consumer {
        stream: spec.stream.clone(),
        consumer: spec.durable.clone(),
        message,
    };
    let stream = js
        .get_stream(&spec.stream)
        .await
        .map_err(|e| err(e.to_string()))?;
    let (filter_subject, filter_subjects) = match spec.filter_subjects.as_slice() {
        [one] => (one.clone(), Vec::new()),
        many => (String::new(), many.to_vec()),
    };
    let config = jetstream::consumer::pull::Config {
        durable_name: Some(spec.durable.clone()),
        filter_subject,
        filter_subjects,
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        ack_wait: spec.ack_wait,
        max_deliver: -1,
        max_ack_pending: spec.max_ack_pending,
        ..Default::default()
    };
    let mut last = String::new();
    for _ in 0..3 {
        match stream.create_consumer(config.clone()).await {
            Ok(consumer) => return Ok(consumer),
            Err(e) => last = e.to_string(),
        }
    }
    Err(err(last))
}
