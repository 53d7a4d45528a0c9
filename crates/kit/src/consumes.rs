//! What a durable consumer reads, declared once from the event catalog.
//!
//! A service lists the events it consumes ([`Consumes::event`]) or whole streams
//! ([`Consumes::stream`]); its consumer specs (one per stream, filter `<prefix>.*` per event) and
//! its handlers' `handles()` both come from that one list, and a test compares it with the chart's
//! `services.<name>.events.consumes`.

use jetmart_proto::{EVENT_TYPES, Event, EventType};
use jetmart_runtime::catalog::{StreamSpec, stream_for_subject};
use jetmart_runtime::provision::ConsumerSpec;

/// The events one durable consumer name reads, grouped by stream in declaration order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consumes {
    reads: Vec<Read>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Read {
    stream: StreamSpec,
    /// Empty: the whole stream.
    events: Vec<EventType>,
}

impl Consumes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the event `E`, on the stream its subject belongs to.
    pub fn event<E: Event>(mut self) -> Self {
        let event = *EVENT_TYPES
            .iter()
            .find(|t| t.subject_prefix == E::SUBJECT_PREFIX)
            // jetmart-proto's tests check every Event impl is in EVENT_TYPES.
            .unwrap_or_else(|| panic!("{} is not in EVENT_TYPES", E::SUBJECT_PREFIX));
        let stream = stream_for_subject(event.subject_prefix)
            .unwrap_or_else(|| panic!("no stream holds {}", event.subject_prefix));
        match self.reads.iter_mut().find(|r| r.stream == stream) {
            Some(read) => {
                assert!(!read.events.is_empty(), "{} is read whole", stream.name);
                if !read.events.contains(&event) {
                    read.events.push(event);
                }
            }
            None => self.reads.push(Read {
                stream,
                events: vec![event],
            }),
        }
        self
    }

    /// Adds every event of `stream`, present and future.
    pub fn stream(mut self, stream: StreamSpec) -> Self {
        assert!(
            self.reads.iter().all(|r| r.stream != stream),
            "{} is already read",
            stream.name
        );
        self.reads.push(Read {
            stream,
            events: Vec::new(),
        });
        self
    }

    /// Whether an event of this `ce-type` is one of those read.
    pub fn handles(&self, event_type: &str) -> bool {
        self.reads.iter().any(|r| {
            if r.events.is_empty() {
                EVENT_TYPES.iter().any(|t| {
                    t.type_name == event_type
                        && stream_for_subject(t.subject_prefix) == Some(r.stream)
                })
            } else {
                r.events.iter().any(|t| t.type_name == event_type)
            }
        })
    }

    /// `(stream, filter subjects)` per stream read, in declaration order.
    pub fn filters(&self) -> Vec<(StreamSpec, Vec<String>)> {
        self.reads
            .iter()
            .map(|r| {
                let filters = if r.events.is_empty() {
                    r.stream.subjects.iter().map(|s| (*s).to_owned()).collect()
                } else {
                    r.events
                        .iter()
                        .map(|t| format!("{}.*", t.subject_prefix))
                        .collect()
                };
                (r.stream, filters)
            })
            .collect()
    }

    /// The durable consumer `durable` on `stream`; panics when `stream` is not read (a wiring
    /// defect, caught by the service's first test).
    pub fn consumer(&self, stream: &StreamSpec, durable: &str) -> ConsumerSpec {
        let (_, filters) = self
            .filters()
            .into_iter()
            .find(|(s, _)| s == stream)
            .unwrap_or_else(|| panic!("{} is not consumed", stream.name));
        let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
        ConsumerSpec::new(stream, durable, &filters)
    }

    /// One durable consumer named `durable` per stream read.
    pub fn consumers(&self, durable: &str) -> Vec<ConsumerSpec> {
        self.reads
            .iter()
            .map(|r| self.consumer(&r.stream, durable))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use jetmart_proto::order::v1::{OrderCancelled, OrderConfirmed, OrderPlaced};
    use jetmart_proto::payment::v1::PaymentDeclined;
    use jetmart_proto::survey::v1::SurveyRequested;
    use jetmart_runtime::catalog;
    use prost::Name;

    use super::*;

    #[test]
    fn filters_and_handles_come_from_the_same_list() {
        let c = Consumes::new()
            .event::<OrderConfirmed>()
            .event::<SurveyRequested>()
            .event::<OrderCancelled>();
        assert_eq!(
            c.filters(),
            vec![
                (
                    catalog::ORDER,
                    vec![
                        "order.confirmed.*".to_owned(),
                        "order.cancelled.*".to_owned()
                    ]
                ),
                (catalog::SURVEY, vec!["survey.requested.*".to_owned()]),
            ]
        );
        assert!(c.handles(&OrderConfirmed::full_name()));
        assert!(c.handles(&SurveyRequested::full_name()));
        assert!(!c.handles(&OrderPlaced::full_name()));
        assert!(!c.handles("jetmart.order.v1.Unknown"));
        let specs = c.consumers("notification");
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[1].stream, "SURVEY");
        assert_eq!(specs[1].durable, "notification");
        assert_eq!(specs[1].filter_subjects, ["survey.requested.*"]);
    }

    #[test]
    fn a_whole_stream_handles_each_of_its_events() {
        let c = Consumes::new().stream(catalog::ORDER);
        assert_eq!(
            c.filters(),
            vec![(catalog::ORDER, vec!["order.>".to_owned()])]
        );
        assert!(c.handles(&OrderPlaced::full_name()));
        assert!(!c.handles(&PaymentDeclined::full_name()));
    }
}
