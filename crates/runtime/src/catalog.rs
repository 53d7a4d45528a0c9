//! The streams of the system. One stream per publishing context, plus the dead-letter stream.
//! Subjects are `<context>.<event>.<aggregate-id>`.

/// A JetStream stream owned by one publishing context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSpec {
    pub name: &'static str,
    pub subjects: &'static [&'static str],
}

pub const ORDER: StreamSpec = StreamSpec {
    name: "ORDER",
    subjects: &["order.>"],
};
pub const INVENTORY: StreamSpec = StreamSpec {
    name: "INVENTORY",
    subjects: &["inventory.>"],
};
pub const PAYMENT: StreamSpec = StreamSpec {
    name: "PAYMENT",
    subjects: &["payment.>"],
};
pub const NOTIFICATION: StreamSpec = StreamSpec {
    name: "NOTIFICATION",
    subjects: &["notification.>"],
};
pub const SURVEY: StreamSpec = StreamSpec {
    name: "SURVEY",
    subjects: &["survey.>"],
};
/// Poison and exhausted messages, as `deadletter.<consumer>.<original subject>`.
pub const DEADLETTER: StreamSpec = StreamSpec {
    name: "DEADLETTER",
    subjects: &["deadletter.>"],
};

/// Every business stream (the dead-letter stream excluded).
pub const BUSINESS_STREAMS: &[StreamSpec] = &[ORDER, INVENTORY, PAYMENT, NOTIFICATION, SURVEY];

/// The stream a subject is published to, by its first token.
pub fn stream_for_subject(subject: &str) -> Option<StreamSpec> {
    let context = subject.split('.').next()?;
    BUSINESS_STREAMS
        .iter()
        .chain(std::iter::once(&DEADLETTER))
        .find(|s| s.subjects[0].trim_end_matches(".>") == context)
        .copied()
}

/// The dead-letter subject for a message `consumer` could not handle.
pub fn deadletter_subject(consumer: &str, original_subject: &str) -> String {
    format!("deadletter.{consumer}.{original_subject}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_map_to_their_stream() {
        assert_eq!(
            stream_for_subject("order.placed.01J").unwrap().name,
            "ORDER"
        );
        assert_eq!(
            stream_for_subject("inventory.low.SKU-1").unwrap().name,
            "INVENTORY"
        );
        assert_eq!(
            stream_for_subject("deadletter.payment.x").unwrap().name,
            "DEADLETTER"
        );
        assert!(stream_for_subject("nope.x").is_none());
    }

    #[test]
    fn deadletter_subject_keeps_the_original() {
        assert_eq!(
            deadletter_subject("payment", "inventory.reserved.1"),
            "deadletter.payment.inventory.reserved.1"
        );
    }
}
