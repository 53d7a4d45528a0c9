//! `google.protobuf.Timestamp` to and from `chrono`, for events and gRPC replies.

use chrono::{DateTime, Utc};

/// The protobuf timestamp of `at`.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        // Below 2 * 10^9 even in a leap second: always fits.
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The instant of a protobuf timestamp; `None` when it is out of chrono's range or its nanos
/// are negative.
pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_to_the_nanosecond() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        let t = timestamp(at);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_456_789));
        assert_eq!(from_timestamp(&t), Some(at));
        let before_epoch = DateTime::from_timestamp(-1, 5).unwrap();
        assert_eq!(from_timestamp(&timestamp(before_epoch)), Some(before_epoch));
    }

    #[test]
    fn invalid_timestamps_are_none() {
        let negative_nanos = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(from_timestamp(&negative_nanos), None);
        let far = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(from_timestamp(&far), None);
    }
}
