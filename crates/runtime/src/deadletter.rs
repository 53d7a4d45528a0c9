//! The dead-letter stream: messages a consumer could not handle, kept with their original
//! headers and payload plus why, where and after how many deliveries.

use async_nats::jetstream::{self, message::PublishMessage};

use crate::catalog::deadletter_subject;
use crate::envelope::header::NATS_MSG_ID;

/// Headers added to a dead letter.
pub mod header {
    pub const REASON: &str = "jetmart-dlq-reason";
    pub const ERROR: &str = "jetmart-dlq-error";
    pub const CONSUMER: &str = "jetmart-dlq-consumer";
    pub const DELIVERED: &str = "jetmart-dlq-delivered";
    pub const STREAM: &str = "jetmart-dlq-stream";
    pub const STREAM_SEQ: &str = "jetmart-dlq-stream-seq";
    pub const SUBJECT: &str = "jetmart-dlq-subject";
    pub const ORIGINAL_MSG_ID: &str = "jetmart-dlq-original-msg-id";
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Envelope or payload could not be read.
    Undecodable,
    /// The handler said the event can never succeed.
    Permanent,
    /// Transient failures went on past the delivery limit.
    MaxDeliver,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::Permanent => "permanent",
            Reason::MaxDeliver => "max_deliver",
        }
    }
}

/// Where the message came from.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub consumer: &'a str,
    pub stream: &'a str,
    pub stream_sequence: u64,
    pub subject: &'a str,
    pub delivered: i64,
}

/// Header values cannot hold line breaks and should stay small.
fn header_safe(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    flat.chars().take(1000).collect()
}

/// Copies a message to the dead-letter stream and waits for JetStream to store it. The copy's
/// `Nats-Msg-Id` is derived from its origin, so a retried copy after a crash is stored once.
pub async fn publish(
    js: &jetstream::Context,
    origin: &Origin<'_>,
    original_headers: Option<&async_nats::HeaderMap>,
    payload: bytes::Bytes,
    reason: Reason,
    error: &str,
) -> Result<(), async_nats::Error> {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(orig) = original_headers {
        for (name, values) in orig.iter() {
            for v in values {
                headers.append(name.clone(), v.clone());
            }
        }
        if let Some(id) = orig.get(NATS_MSG_ID) {
            headers.insert(header::ORIGINAL_MSG_ID, id.as_str());
        }
    }
    headers.insert(header::REASON, reason.as_str());
    headers.insert(header::ERROR, header_safe(error).as_str());
    headers.insert(header::CONSUMER, origin.consumer);
    headers.insert(header::DELIVERED, origin.delivered.to_string().as_str());
    headers.insert(header::STREAM, origin.stream);
    headers.insert(
        header::STREAM_SEQ,
        origin.stream_sequence.to_string().as_str(),
    );
    headers.insert(header::SUBJECT, origin.subject);
    let msg_id = format!(
        "dlq:{}:{}:{}",
        origin.consumer, origin.stream, origin.stream_sequence
    );
    headers.insert(NATS_MSG_ID, msg_id.as_str());
    js.send_publish(
        deadletter_subject(origin.consumer, origin.subject),
        PublishMessage::build().headers(headers).payload(payload),
    )
    .await?
    .await?;
    Ok(())
}
