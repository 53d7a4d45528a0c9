//! CloudEvents binary-mode envelope carried in NATS headers.
//!
//! The payload is the protobuf event itself; everything about it (id, type, source, aggregate,
//! time, trace, correlation) travels in headers so brokers and tools can route and inspect
//! without decoding. `Nats-Msg-Id` equals `ce-id`, which makes JetStream drop re-sent copies.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

/// Header names.
pub mod header {
    pub const SPECVERSION: &str = "ce-specversion";
    pub const ID: &str = "ce-id";
    pub const TYPE: &str = "ce-type";
    pub const SOURCE: &str = "ce-source";
    pub const SUBJECT: &str = "ce-subject";
    pub const TIME: &str = "ce-time";
    pub const CONTENT_TYPE: &str = "content-type";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
    pub const CORRELATION_ID: &str = "jetmart-correlation-id";
    pub const CAUSATION_ID: &str = "jetmart-causation-id";
    pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
}

pub const SPECVERSION: &str = "1.0";
pub const CONTENT_TYPE_PROTOBUF: &str = "application/protobuf";

/// An event ready to be written to the outbox and published.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingEvent {
    pub id: Uuid,
    /// `<context>.<event>.<aggregate-id>`.
    pub subject: String,
    pub aggregate_id: String,
    /// Every header, `Nats-Msg-Id` included, in a stable order.
    pub headers: BTreeMap<String, String>,
    pub payload: Bytes,
}

impl OutgoingEvent {
    /// A new event with a fresh UUIDv7 id; it starts its own correlation chain unless
    /// [`OutgoingEvent::caused_by`] links it to the event that triggered it.
    pub fn new<E: jetmart_proto::Event>(source: &str, aggregate_id: &str, event: &E) -> Self {
        Self::at(source, aggregate_id, event, Utc::now())
    }

    /// As [`OutgoingEvent::new`] with an explicit time (the time the state changed).
    pub fn at<E: jetmart_proto::Event>(
        source: &str,
        aggregate_id: &str,
        event: &E,
        time: DateTime<Utc>,
    ) -> Self {
        let id = Uuid::now_v7();
        let mut headers = BTreeMap::new();
        headers.insert(header::SPECVERSION.into(), SPECVERSION.into());
        headers.insert(header::ID.into(), id.to_string());
        headers.insert(header::TYPE.into(), E::full_name());
        headers.insert(header::SOURCE.into(), source.into());
        headers.insert(header::SUBJECT.into(), aggregate_id.into());
        headers.insert(
            header::TIME.into(),
            time.to_rfc3339_opts(SecondsFormat::Micros, true),
        );
        headers.insert(header::CONTENT_TYPE.into(), CONTENT_TYPE_PROTOBUF.into());
        headers.insert(header::CORRELATION_ID.into(), id.to_string());
        headers.insert(header::NATS_MSG_ID.into(), id.to_string());
        if let Some((parent, state)) = crate::trace::current_traceparent() {
            headers.insert(header::TRACEPARENT.into(), parent);
            if let Some(state) = state {
                headers.insert(header::TRACESTATE.into(), state);
            }
        }
        Self {
            id,
            subject: format!("{}.{}", E::SUBJECT_PREFIX, aggregate_id),
            aggregate_id: aggregate_id.into(),
            headers,
            payload: Bytes::from(event.encode_to_vec()),
        }
    }

    /// Links this event to the one that caused it: same correlation id, causation = its id, and
    /// the trace continues from it when no span is active here.
    pub fn caused_by(mut self, cause: &EventMeta) -> Self {
        let correlation = cause
            .correlation_id
            .clone()
            .unwrap_or_else(|| cause.id.to_string());
        self.headers
            .insert(header::CORRELATION_ID.into(), correlation);
        self.headers
            .insert(header::CAUSATION_ID.into(), cause.id.to_string());
        if !self.headers.contains_key(header::TRACEPARENT)
            && let Some(parent) = &cause.traceparent
        {
            self.headers
                .insert(header::TRACEPARENT.into(), parent.clone());
        }
        self
    }

    /// Sets the correlation id (for example from a gRPC request's metadata).
    pub fn with_correlation_id(mut self, correlation_id: &str) -> Self {
        self.headers
            .insert(header::CORRELATION_ID.into(), correlation_id.into());
        self
    }

    pub fn event_type(&self) -> &str {
        self.headers
            .get(header::TYPE)
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub fn nats_headers(&self) -> async_nats::HeaderMap {
        to_nats_headers(&self.headers)
    }
}

pub(crate) fn to_nats_headers(headers: &BTreeMap<String, String>) -> async_nats::HeaderMap {
    let mut map = async_nats::HeaderMap::new();
    for (k, v) in headers {
        map.insert(k.as_str(), v.as_str());
    }
    map
}

/// Why an incoming message's envelope could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("message has no headers")]
    NoHeaders,
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("header {name} is malformed: {value:?}")]
    Malformed { name: &'static str, value: String },
}

/// What the headers say about an incoming event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    pub id: Uuid,
    pub event_type: String,
    pub source: String,
    /// The aggregate id (`ce-subject`).
    pub aggregate_id: String,
    pub time: DateTime<Utc>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub traceparent: Option<String>,
}

impl EventMeta {
    pub fn from_headers(headers: Option<&async_nats::HeaderMap>) -> Result<Self, EnvelopeError> {
        let headers = headers.ok_or(EnvelopeError::NoHeaders)?;
        let get = |name: &'static str| headers.get(name).map(|v| v.as_str().to_owned());
        let req = |name: &'static str| get(name).ok_or(EnvelopeError::Missing(name));
        let id_text = req(header::ID)?;
        let id = Uuid::parse_str(&id_text).map_err(|_| EnvelopeError::Malformed {
            name: header::ID,
            value: id_text,
        })?;
        let time_text = req(header::TIME)?;
        let time = DateTime::parse_from_rfc3339(&time_text)
            .map_err(|_| EnvelopeError::Malformed {
                name: header::TIME,
                value: time_text,
            })?
            .with_timezone(&Utc);
        Ok(Self {
            id,
            event_type: req(header::TYPE)?,
            source: req(header::SOURCE)?,
            aggregate_id: req(header::SUBJECT)?,
            time,
            correlation_id: get(header::CORRELATION_ID),
            causation_id: get(header::CAUSATION_ID),
            traceparent: get(header::TRACEPARENT),
        })
    }
}

/// An event as a handler sees it.
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    pub meta: EventMeta,
    /// The NATS subject it arrived on.
    pub subject: String,
    pub payload: Bytes,
    /// Delivery attempt, starting at 1.
    pub delivered: i64,
    pub stream_sequence: u64,
    /// What [`IncomingEvent::decoded`] made of the payload, so that the steps one delivery
    /// goes through (batch locks, handler, after-commit work) decode it once.
    pub decoded: DecodedPayload,
}

/// The payload of an [`IncomingEvent`], once decoded (empty until then).
#[derive(Clone, Default)]
pub struct DecodedPayload(std::sync::OnceLock<std::sync::Arc<dyn std::any::Any + Send + Sync>>);

impl std::fmt::Debug for DecodedPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "DecodedPayload(decoded)"
        } else {
            "DecodedPayload(not yet)"
        })
    }
}

/// The payload is not the protobuf message its `ce-type` names.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode {event_type} payload: {source}")]
pub struct DecodeError {
    pub event_type: String,
    #[source]
    pub source: prost::DecodeError,
}

impl IncomingEvent {
    pub fn decode<E: prost::Message + Default>(&self) -> Result<E, DecodeError> {
        E::decode(self.payload.clone()).map_err(|source| DecodeError {
            event_type: self.meta.event_type.clone(),
            source,
        })
    }

    /// The payload as `E`, decoded on the first call and shared by the later ones.
    pub fn decoded<E>(&self) -> Result<std::sync::Arc<E>, DecodeError>
    where
        E: prost::Message + Default + Send + Sync + 'static,
    {
        if let Some(any) = self.decoded.0.get()
            && let Ok(e) = any.clone().downcast::<E>()
        {
            return Ok(e);
        }
        let e = std::sync::Arc::new(self.decode::<E>()?);
        // Asked as another type first: that one stays cached, this one is just returned.
        let _ = self.decoded.0.set(e.clone());
        Ok(e)
    }

    /// True when `ce-type` names `E`.
    pub fn is<E: prost::Name>(&self) -> bool {
        self.meta.event_type == E::full_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetmart_proto::order::v1::OrderCancelled;

    #[test]
    fn outgoing_headers_round_trip_into_meta() {
        let event = OrderCancelled {
            order_id: "o-1".into(),
            ..Default::default()
        };
        let out = OutgoingEvent::new("order", "o-1", &event);
        assert_eq!(out.subject, "order.cancelled.o-1");
        assert_eq!(out.headers[header::NATS_MSG_ID], out.id.to_string());
        assert_eq!(out.event_type(), "jetmart.order.v1.OrderCancelled");
        let meta = EventMeta::from_headers(Some(&out.nats_headers())).unwrap();
        assert_eq!(meta.id, out.id);
        assert_eq!(meta.aggregate_id, "o-1");
        assert_eq!(meta.source, "order");
        assert_eq!(
            meta.correlation_id.as_deref(),
            Some(out.id.to_string().as_str())
        );
    }

    #[test]
    fn a_payload_is_decoded_once() {
        let out = OutgoingEvent::new(
            "order",
            "o-1",
            &OrderCancelled {
                order_id: "o-1".into(),
                ..Default::default()
            },
        );
        let event = IncomingEvent {
            meta: EventMeta::from_headers(Some(&out.nats_headers())).unwrap(),
            subject: out.subject.clone(),
            payload: out.payload.clone(),
            delivered: 1,
            stream_sequence: 1,
            decoded: DecodedPayload::default(),
        };
        let first = event.decoded::<OrderCancelled>().unwrap();
        let again = event.decoded::<OrderCancelled>().unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &again));
        assert_eq!(again.order_id, "o-1");
    }

    #[test]
    fn caused_by_keeps_the_correlation_chain() {
        let first = OutgoingEvent::new("order", "o-1", &OrderCancelled::default());
        let first_meta = EventMeta::from_headers(Some(&first.nats_headers())).unwrap();
        let second = OutgoingEvent::new("inventory", "o-1", &OrderCancelled::default())
            .caused_by(&first_meta);
        assert_eq!(second.headers[header::CORRELATION_ID], first.id.to_string());
        assert_eq!(second.headers[header::CAUSATION_ID], first.id.to_string());
    }

    #[test]
    fn missing_and_malformed_headers_are_named() {
        assert_eq!(EventMeta::from_headers(None), Err(EnvelopeError::NoHeaders));
        let mut h = async_nats::HeaderMap::new();
        h.insert(header::ID, "not-a-uuid");
        h.insert(header::TIME, "2026-01-01T00:00:00Z");
        assert!(matches!(
            EventMeta::from_headers(Some(&h)),
            Err(EnvelopeError::Malformed {
                name: header::ID,
                ..
            })
        ));
        let h = async_nats::HeaderMap::new();
        assert_eq!(
            EventMeta::from_headers(Some(&h)),
            Err(EnvelopeError::Missing(header::ID))
        );
    }
}
