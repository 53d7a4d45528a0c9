//! docs/events.md is checked against the code: its events table lists exactly the event types of
//! `jetmart_proto::EVENT_TYPES`, each on its context's stream, read by exactly the durable
//! consumers of the event-flow matrix in the Helm values (the one place that says who reads
//! what).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Rows of the "## Events" table: subject prefix -> (ce-type, stream, consumers).
fn documented() -> BTreeMap<String, (String, String, BTreeSet<String>)> {
    let text = std::fs::read_to_string(repo().join("docs/events.md")).expect("docs/events.md");
    let section = text
        .split("\n## Events\n")
        .nth(1)
        .expect("an '## Events' section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [subject, ce_type, stream, consumers] = cells[..] else {
            panic!("events row without 4 cells: {line}");
        };
        let subject = subject.trim_matches('`');
        let prefix = subject
            .rsplit_once('.')
            .map(|(p, _)| p)
            .unwrap_or_else(|| panic!("subject without an aggregate part: {subject}"));
        let consumers = consumers
            .split(',')
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        let previous = rows.insert(
            prefix.to_owned(),
            (
                ce_type.trim_matches('`').to_owned(),
                stream.to_owned(),
                consumers,
            ),
        );
        assert!(previous.is_none(), "{prefix} listed twice");
    }
    rows
}

/// `services.<name>.events.consumes` of the chart values: service -> filter subjects.
fn matrix() -> BTreeMap<String, Vec<String>> {
    let values = std::fs::read_to_string(repo().join("deploy/helm/jetmart/values.yaml"))
        .expect("values.yaml");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let (mut in_services, mut service, mut in_consumes) = (false, None::<String>, false);
    for line in values.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if indent == 0 {
            in_services = trimmed == "services:";
            continue;
        }
        if !in_services {
            continue;
        }
        if indent == 2 {
            service = trimmed.strip_suffix(':').map(str::to_owned);
            in_consumes = false;
        } else if indent == 6 {
            in_consumes = trimmed == "consumes:";
        } else if indent == 8
            && in_consumes
            && let Some(service) = &service
            && let Some((_, filters)) = trimmed.split_once(':')
        {
            let filters = filters.trim().trim_start_matches('[').trim_end_matches(']');
            out.entry(service.clone()).or_default().extend(
                filters
                    .split(',')
                    .map(|f| f.trim().trim_matches('"').to_owned())
                    .filter(|f| !f.is_empty()),
            );
        }
    }
    out
}

/// Whether a filter like `order.placed.*` or `order.>` takes events `<prefix>.<id>`.
fn takes(filter: &str, prefix: &str) -> bool {
    match filter.strip_suffix(".>") {
        Some(context) => prefix.split('.').next() == Some(context),
        None => filter.strip_suffix(".*") == Some(prefix),
    }
}

#[test]
fn events_doc_lists_every_event_with_its_stream_and_consumers() {
    let documented = documented();
    let matrix = matrix();
    assert!(
        [
            "order",
            "inventory",
            "payment",
            "notification",
            "survey",
            "analytics"
        ]
        .iter()
        .all(|s| matrix.contains_key(*s)),
        "the values.yaml matrix did not parse: {matrix:?}"
    );
    let in_code: BTreeSet<&str> = jetmart_proto::EVENT_TYPES
        .iter()
        .map(|e| e.subject_prefix)
        .collect();
    let in_doc: BTreeSet<&str> = documented.keys().map(String::as_str).collect();
    assert_eq!(in_doc, in_code, "docs/events.md and EVENT_TYPES disagree");
    for e in jetmart_proto::EVENT_TYPES {
        let (ce_type, stream, consumers) = &documented[e.subject_prefix];
        assert_eq!(ce_type, e.type_name, "{}", e.subject_prefix);
        let context = e.subject_prefix.split('.').next().unwrap();
        assert_eq!(*stream, context.to_uppercase(), "{}", e.subject_prefix);
        let expected: BTreeSet<String> = matrix
            .iter()
            .filter(|(_, filters)| filters.iter().any(|f| takes(f, e.subject_prefix)))
            .map(|(service, _)| service.clone())
            .collect();
        assert_eq!(
            consumers, &expected,
            "consumers of {} in docs/events.md vs the chart's event-flow matrix",
            e.subject_prefix
        );
    }
}

#[test]
fn filters_match_as_nats_does() {
    assert!(takes("order.placed.*", "order.placed"));
    assert!(!takes("order.placed.*", "order.confirmed"));
    assert!(takes("order.>", "order.confirmed"));
    assert!(!takes("order.>", "payment.voided"));
}
