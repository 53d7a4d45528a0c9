//! Deterministic Message-IDs.
//!
//! The id is derived from (event id, template), so if the service is killed during the SMTP
//! exchange and sends again, both copies carry the same Message-ID and the duplicate is
//! identifiable; any other send of the same email is a bug.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::templates::EmailTemplate;

/// `<{32 hex digits}@jetmart>`: the first 128 bits of
/// `sha256("jetmart-notification/v1" | event id | template name)`.
pub fn message_id(event_id: Uuid, template: EmailTemplate) -> String {
    let digest = Sha256::new()
        .chain_update(b"jetmart-notification/v1\0")
        .chain_update(event_id.as_bytes())
        .chain_update(template.name().as_bytes())
        .finalize();
    format!("<{}@jetmart>", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_per_event_and_template() {
        let e = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        let a = message_id(e, EmailTemplate::OrderConfirmed);
        assert_eq!(a, message_id(e, EmailTemplate::OrderConfirmed));
        assert_ne!(a, message_id(e, EmailTemplate::OrderCancelled));
        assert_ne!(
            a,
            message_id(Uuid::from_u128(2), EmailTemplate::OrderConfirmed)
        );
        assert!(a.starts_with('<') && a.ends_with("@jetmart>"));
        assert_eq!(a.len(), "<@jetmart>".len() + 32);
        assert!(a[1..33].bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
