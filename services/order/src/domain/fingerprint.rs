//! Request fingerprints for PlaceOrder idempotency.
//!
//! The store keeps `idempotency_key -> (order id, fingerprint)`. A retry with the same key
//! and the same fingerprint gets the original order back; the same key with a different
//! fingerprint is refused (ALREADY_EXISTS). Keys are global, so another customer reusing a
//! key also gets a conflict (the customer id is part of the fingerprint) and never sees the
//! first customer's order.
//!
//! The fingerprint is the SHA-256 of a canonical, length-prefixed encoding of the validated
//! request. Lines are sorted by SKU (SKUs are unique after validation), so a client that
//! resends the same lines in another order is recognised as the same request. The idempotency
//! key itself is not part of it: it is the lookup, not the content.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::events::OrderId;
use super::validation::ValidatedOrder;

/// Bumped if the canonical encoding ever changes, so old and new fingerprints never collide.
const DOMAIN: &[u8] = b"jetmart.order.place-order.v1";

/// Lower-case hex SHA-256 of a canonical PlaceOrder request (64 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestFingerprint(String);

/// A stored fingerprint that is not 64 lower-case hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed request fingerprint {0:?}")]
pub struct MalformedFingerprint(pub String);

impl RequestFingerprint {
    /// Fingerprint of a validated request.
    pub fn of(order: &ValidatedOrder) -> RequestFingerprint {
        let mut h = Sha256::new();
        field(&mut h, DOMAIN);
        field(&mut h, order.customer_id().as_bytes());
        field(&mut h, order.customer_email().as_bytes());
        field(&mut h, order.currency().code().as_bytes());
        field(&mut h, order.payment_token().as_bytes());
        let mut lines: Vec<_> = order.lines().iter().collect();
        lines.sort_by(|a, b| a.sku.cmp(&b.sku));
        field(&mut h, &(lines.len() as u64).to_be_bytes());
        for line in lines {
            field(&mut h, line.sku.as_bytes());
            field(&mut h, &line.quantity.to_be_bytes());
            field(&mut h, &line.unit_price.amount_minor().to_be_bytes());
        }
        RequestFingerprint(hex::encode(h.finalize()))
    }

    /// Rebuilds a fingerprint read back from storage.
    pub fn parse(s: &str) -> Result<RequestFingerprint, MalformedFingerprint> {
        let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(RequestFingerprint(s.to_owned()))
        } else {
            Err(MalformedFingerprint(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Length-prefixing makes the encoding unambiguous ("ab"+"c" differs from "a"+"bc").
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

impl fmt::Display for RequestFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RequestFingerprint {
    type Error = MalformedFingerprint;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RequestFingerprint::parse(&s)
    }
}

impl From<RequestFingerprint> for String {
    fn from(f: RequestFingerprint) -> String {
        f.0
    }
}

/// What to do with a PlaceOrder whose idempotency key may have been seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdempotencyCheck {
    /// First use of the key: place a new order.
    New,
    /// Same key, same request: answer with the existing order, create nothing.
    Replay(OrderId),
    /// Same key, different request: refuse (ALREADY_EXISTS).
    Conflict,
}

/// Decides from what the store holds for the key (`existing`) and the incoming fingerprint.
pub fn check_idempotency(
    existing: Option<(OrderId, &RequestFingerprint)>,
    incoming: &RequestFingerprint,
) -> IdempotencyCheck {
    match existing {
        None => IdempotencyCheck::New,
        Some((id, stored)) if stored == incoming => IdempotencyCheck::Replay(id),
        Some(_) => IdempotencyCheck::Conflict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validation::tests::{line, valid_input};
    use crate::domain::validation::{Limits, PlaceOrderInput, validate};
    use proptest::prelude::*;
    use uuid::Uuid;

    fn fp(input: &PlaceOrderInput) -> RequestFingerprint {
        RequestFingerprint::of(&validate(input, &Limits::default()).unwrap())
    }

    #[test]
    fn is_stable_and_hex() {
        let a = fp(&valid_input());
        assert_eq!(a, fp(&valid_input()));
        assert_eq!(a.as_str().len(), 64);
        assert_eq!(RequestFingerprint::parse(a.as_str()), Ok(a.clone()));
        // Pinned: a change of the canonical encoding must be deliberate (bump DOMAIN).
        assert_eq!(a.as_str(), PINNED);
    }

    const PINNED: &str = "be59c15570fac88fdce1205c703d1ca8787c323faaf772f52212302e3494a88a";

    #[test]
    fn ignores_line_order_and_idempotency_key() {
        let mut b = valid_input();
        b.lines.reverse();
        b.idempotency_key = "another-key".into();
        assert_eq!(fp(&valid_input()), fp(&b));
    }

    #[test]
    fn changes_with_any_content_field() {
        let base = fp(&valid_input());
        let variants: Vec<PlaceOrderInput> = vec![
            PlaceOrderInput {
                customer_id: "cust-43".into(),
                ..valid_input()
            },
            PlaceOrderInput {
                customer_email: "john@example.com".into(),
                ..valid_input()
            },
            PlaceOrderInput {
                payment_token: "tok_other".into(),
                ..valid_input()
            },
            PlaceOrderInput {
                currency: "USD".into(),
                lines: vec![line("SKU-1", 2, 1250, "USD"), line("SKU-2", 1, 99, "USD")],
                ..valid_input()
            },
            PlaceOrderInput {
                lines: vec![line("SKU-1", 3, 1250, "EUR"), line("SKU-2", 1, 99, "EUR")],
                ..valid_input()
            },
            PlaceOrderInput {
                lines: vec![line("SKU-1", 2, 1251, "EUR"), line("SKU-2", 1, 99, "EUR")],
                ..valid_input()
            },
            PlaceOrderInput {
                lines: vec![line("SKU-1", 2, 1250, "EUR")],
                ..valid_input()
            },
        ];
        for v in &variants {
            assert_ne!(fp(v), base, "{v:?}");
        }
    }

    #[test]
    fn serde_refuses_malformed_values() {
        let ok: RequestFingerprint = serde_json::from_str(&format!("\"{PINNED}\"")).unwrap();
        assert_eq!(ok.as_str(), PINNED);
        assert!(serde_json::from_str::<RequestFingerprint>("\"abc\"").is_err());
        assert!(RequestFingerprint::parse(&PINNED.to_uppercase()).is_err());
    }

    #[test]
    fn idempotency_decisions() {
        let id = OrderId(Uuid::from_u128(7));
        let a = fp(&valid_input());
        let b = fp(&PlaceOrderInput {
            customer_id: "other".into(),
            ..valid_input()
        });
        assert_eq!(check_idempotency(None, &a), IdempotencyCheck::New);
        assert_eq!(
            check_idempotency(Some((id, &a)), &a),
            IdempotencyCheck::Replay(id)
        );
        assert_eq!(
            check_idempotency(Some((id, &a)), &b),
            IdempotencyCheck::Conflict
        );
    }

    proptest! {
        /// Length prefixes keep field boundaries: moving characters between fields changes the hash.
        #[test]
        fn field_boundaries_matter(a in "[a-z]{1,8}", b in "[a-z]{1,8}") {
            let one = fp(&PlaceOrderInput { customer_id: format!("{a}{b}"), payment_token: "t".into(), ..valid_input() });
            let two = fp(&PlaceOrderInput { customer_id: a.clone(), payment_token: format!("{b}t"), ..valid_input() });
            prop_assert_ne!(one, two);
        }

        /// Any permutation of the lines gives the same fingerprint.
        #[test]
        fn permutation_invariant(seed in any::<u64>()) {
            let lines: Vec<_> = (0..5).map(|i| line(&format!("S{i}"), i + 1, 100 * (i + 1), "EUR")).collect();
            let mut shuffled = lines.clone();
            // A cheap deterministic shuffle driven by the seed.
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(
                fp(&PlaceOrderInput { lines, ..valid_input() }),
                fp(&PlaceOrderInput { lines: shuffled, ..valid_input() })
            );
        }
    }
}
