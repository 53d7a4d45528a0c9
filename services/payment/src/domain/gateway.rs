//! The payment gateway abstraction and its vocabulary.
//!
//! [`PaymentGateway`] is object-safe (methods return a boxed future) rather than generic with
//! `async fn`: the service picks the implementation at startup from configuration (simulated
//! now, a real provider later), so it holds an `Arc<dyn PaymentGateway>` and the retry,
//! circuit-breaker and handler code is written once, without a type parameter spreading
//! through every handler. One allocation per call is nothing next to a network round trip.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An amount to charge: integer minor units and an ISO 4217 code, as carried by the events.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Amount {
    pub minor_units: i64,
    pub currency: String,
}

impl Amount {
    pub fn new(minor_units: i64, currency: impl Into<String>) -> Amount {
        Amount {
            minor_units,
            currency: currency.into(),
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (minor units)", self.minor_units, self.currency)
    }
}

/// An authorization request. The order id is the idempotency key: the gateway answers a
/// repeated request for the same order with the same result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    pub order_id: Uuid,
    pub amount: Amount,
    /// Opaque payment token from the customer's checkout; never card data.
    pub token: String,
}

/// The gateway's handle for an authorization.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AuthorizationId(pub String);

impl fmt::Display for AuthorizationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Funds held for an order, to be captured or voided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    pub id: AuthorizationId,
    pub order_id: Uuid,
    pub amount: Amount,
}

/// Why the gateway refused to authorize. A decline is a final business answer, not a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeclineReason {
    CardDeclined,
    InsufficientFunds,
    AmountAboveLimit,
    InvalidAmount,
    InvalidToken,
    /// Not the gateway's answer: it gave none (failing or unreachable) before the payment's
    /// authorization deadline, so payment gave up.
    GatewayUnavailable,
}

impl DeclineReason {
    /// API spelling, e.g. `INSUFFICIENT_FUNDS`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineReason::CardDeclined => "CARD_DECLINED",
            DeclineReason::InsufficientFunds => "INSUFFICIENT_FUNDS",
            DeclineReason::AmountAboveLimit => "AMOUNT_ABOVE_LIMIT",
            DeclineReason::InvalidAmount => "INVALID_AMOUNT",
            DeclineReason::InvalidToken => "INVALID_TOKEN",
            DeclineReason::GatewayUnavailable => "GATEWAY_UNAVAILABLE",
        }
    }
}

impl DeclineReason {
    /// Every reason, for parsing and listing.
    pub const ALL: [DeclineReason; 6] = [
        DeclineReason::CardDeclined,
        DeclineReason::InsufficientFunds,
        DeclineReason::AmountAboveLimit,
        DeclineReason::InvalidAmount,
        DeclineReason::InvalidToken,
        DeclineReason::GatewayUnavailable,
    ];
}

impl std::str::FromStr for DeclineReason {
    type Err = String;

    /// The API spelling back (`INSUFFICIENT_FUNDS`), as stored and configured.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeclineReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown decline reason {s:?}"))
    }
}

impl fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to an authorization request that reached a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeOutcome {
    Authorized(Authorization),
    Declined(DeclineReason),
}

/// What an authorization ended as, for [`GatewayError::AuthorizationClosed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    Captured,
    Voided,
}

impl fmt::Display for Settlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Settlement::Captured => "captured",
            Settlement::Voided => "voided",
        })
    }
}

/// A gateway call that did not produce an answer, or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Timeout, connection trouble, 5xx from the provider: retry with backoff. The request
    /// may or may not have been processed; idempotency makes the retry safe.
    #[error("gateway unavailable: {0}")]
    Transient(String),
    /// The idempotency key was used before with a different amount or token.
    #[error("idempotency key {order_id} was used with a different request")]
    IdempotencyConflict { order_id: Uuid },
    /// The gateway does not know this authorization.
    #[error("unknown authorization {0}")]
    UnknownAuthorization(AuthorizationId),
    /// Capture of a voided authorization, or void of a captured one.
    #[error("authorization {id} is already {settlement}")]
    AuthorizationClosed {
        id: AuthorizationId,
        settlement: Settlement,
    },
}

impl GatewayError {
    /// Whether retrying the same call may succeed (and should count against the circuit breaker).
    pub fn is_transient(&self) -> bool {
        matches!(self, GatewayError::Transient(_))
    }
}

/// The future returned by gateway calls.
pub type GatewayFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, GatewayError>> + Send + 'a>>;

/// A payment provider. Implementations must be idempotent: `authorize` per order id, and
/// `capture` / `void` per authorization (repeating a completed capture or void succeeds).
pub trait PaymentGateway: Send + Sync {
    /// Holds `request.amount` on the token, keyed by `request.order_id`.
    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizeRequest,
    ) -> GatewayFuture<'a, AuthorizeOutcome>;
    /// Collects the held funds.
    fn capture<'a>(&'a self, authorization: &'a Authorization) -> GatewayFuture<'a, ()>;
    /// Releases the held funds.
    fn void<'a>(&'a self, authorization: &'a Authorization) -> GatewayFuture<'a, ()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_errors_are_retryable() {
        assert!(GatewayError::Transient("timeout".into()).is_transient());
        assert!(
            !GatewayError::IdempotencyConflict {
                order_id: Uuid::nil()
            }
            .is_transient()
        );
        assert!(!GatewayError::UnknownAuthorization(AuthorizationId("a".into())).is_transient());
        let closed = GatewayError::AuthorizationClosed {
            id: AuthorizationId("auth_1".into()),
            settlement: Settlement::Captured,
        };
        assert!(!closed.is_transient());
        assert_eq!(
            closed.to_string(),
            "authorization auth_1 is already captured"
        );
    }

    #[test]
    fn decline_reasons_parse_back() {
        for r in DeclineReason::ALL {
            assert_eq!(r.as_str().parse::<DeclineReason>(), Ok(r));
        }
        assert!("card_declined".parse::<DeclineReason>().is_err());
    }

    #[test]
    fn decline_reasons_have_api_names() {
        assert_eq!(
            DeclineReason::InsufficientFunds.to_string(),
            "INSUFFICIENT_FUNDS"
        );
        assert_eq!(Amount::new(5, "EUR").to_string(), "5 EUR (minor units)");
    }
}
