//! Payloads decoded by their `ce-type` against the descriptors of every jetmart proto file, so
//! any message jetmart-proto knows is printed readably without a match arm per type.

use std::fmt::Write as _;
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    // Generated at build time by jetmart-proto; a failure here is a build defect.
    POOL.get_or_init(|| {
        DescriptorPool::decode(jetmart_proto::FILE_DESCRIPTOR_SET)
            .expect("jetmart-proto's FILE_DESCRIPTOR_SET decodes")
    })
}

/// Why a payload could not be shown as its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undecodable {
    /// No `ce-type` header: the type is unknown.
    NoType,
    /// A `ce-type` no jetmart proto file declares.
    UnknownType(String),
    /// The bytes are not a valid encoding of the type.
    Invalid { type_name: String, error: String },
}

impl std::fmt::Display for Undecodable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undecodable::NoType => write!(f, "no ce-type header, so the payload's type is unknown"),
            Undecodable::UnknownType(t) => {
                write!(f, "ce-type {t:?} is not a message jetmart-proto knows")
            }
            Undecodable::Invalid { type_name, error } => {
                write!(f, "does not decode as {type_name}: {error}")
            }
        }
    }
}

/// The payload as pretty JSON (proto field names, enum names, every field including defaults).
pub fn to_json(type_name: Option<&str>, payload: &[u8]) -> Result<String, Undecodable> {
    let type_name = type_name.ok_or(Undecodable::NoType)?;
    let desc = pool()
        .get_message_by_name(type_name)
        .ok_or_else(|| Undecodable::UnknownType(type_name.to_owned()))?;
    let invalid = |error: String| Undecodable::Invalid {
        type_name: type_name.to_owned(),
        error,
    };
    let message = DynamicMessage::decode(desc, payload).map_err(|e| invalid(e.to_string()))?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::pretty(&mut out);
    message
        .serialize_with_options(&mut ser, &options)
        .map_err(|e| invalid(e.to_string()))?;
    String::from_utf8(out).map_err(|e| invalid(e.to_string()))
}

/// `hexdump -C` style, at most `max` bytes.
pub fn hex_dump(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes[..bytes.len().min(max)].chunks(16).enumerate() {
        let _ = write!(out, "{:08x}  ", i * 16);
        for j in 0..16 {
            match chunk.get(j) {
                Some(b) => {
                    let _ = write!(out, "{b:02x} ");
                }
                None => out.push_str("   "),
            }
            if j == 7 {
                out.push(' ');
            }
        }
        out.push_str(" |");
        out.extend(chunk.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        }));
        out.push_str("|\n");
    }
    if bytes.len() > max {
        let _ = writeln!(out, "... {} more bytes", bytes.len() - max);
    }
    out
}

/// The bytes as text with everything unprintable escaped, at most `max` bytes.
pub fn escaped(bytes: &[u8], max: usize) -> String {
    let mut out = bytes[..bytes.len().min(max)].escape_ascii().to_string();
    if bytes.len() > max {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetmart_proto::common::v1::Money;
    use jetmart_proto::order::v1::OrderPlaced;
    use prost::Message;

    #[test]
    fn every_event_type_is_known() {
        for t in jetmart_proto::EVENT_TYPES {
            assert!(
                pool().get_message_by_name(t.type_name).is_some(),
                "{}",
                t.type_name
            );
        }
    }

    #[test]
    fn a_payload_decodes_to_json_with_proto_names() {
        let placed = OrderPlaced {
            order_id: "o-1".into(),
            total: Some(Money {
                amount_minor: 2500,
                currency: "USD".into(),
            }),
            placed_at: Some(prost_types_ts()),
            ..Default::default()
        };
        let json = to_json(
            Some("jetmart.order.v1.OrderPlaced"),
            &placed.encode_to_vec(),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["order_id"], "o-1");
        assert_eq!(v["total"]["amount_minor"], 2500);
        assert_eq!(v["customer_email"], "", "defaults are shown");
        assert_eq!(v["placed_at"], "2023-11-14T22:13:20Z");
    }

    fn prost_types_ts() -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }
    }

    #[test]
    fn failures_say_why() {
        assert_eq!(to_json(None, b""), Err(Undecodable::NoType));
        assert!(matches!(
            to_json(Some("jetmart.nope.v1.X"), b""),
            Err(Undecodable::UnknownType(_))
        ));
        let err = to_json(
            Some("jetmart.order.v1.OrderPlaced"),
            b"\xff\xfenot protobuf",
        )
        .unwrap_err();
        assert!(matches!(err, Undecodable::Invalid { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("does not decode as jetmart.order.v1.OrderPlaced")
        );
    }

    #[test]
    fn dumps() {
        let d = hex_dump(b"hello\x00world, this is long", 16);
        assert!(d.starts_with("00000000  68 65 6c 6c 6f 00"), "{d}");
        assert!(d.contains("|hello.world, thi|"), "{d}");
        assert!(d.contains("... 9 more bytes"), "{d}");
        assert_eq!(escaped(b"a\x00b", 10), "a\\x00b");
    }
}
