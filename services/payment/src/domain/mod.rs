//! Pure domain logic of the payment service: the gateway abstraction and a simulated gateway,
//! retry backoff, a circuit breaker, and the payment state machine. No storage, NATS or gRPC
//! types here.
//!
//! Typical authorization on `inventory.reserved`: create a [`Payment`] (Pending); while the
//! [`CircuitBreaker`] allows, call [`PaymentGateway::authorize`] with the order id as
//! idempotency key, retrying transient errors after [`RetryPolicy::next_delay`]; then
//! [`Payment::handle`] the result and publish what changed.

pub mod breaker;
pub mod gateway;
pub mod payment;
pub mod retry;
pub mod simulated;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, CircuitOpen};
pub use gateway::{
    Amount, Authorization, AuthorizationId, AuthorizeOutcome, AuthorizeRequest, DeclineReason,
    GatewayError, GatewayFuture, PaymentGateway, Settlement,
};
pub use payment::{
    GatewayAction, Payment, PaymentCommand, PaymentError, PaymentStatus, Transition,
};
pub use retry::RetryPolicy;
pub use simulated::{
    SimulatedGateway, SimulatedGatewayConfig, TOKEN_DECLINE, TOKEN_INSUFFICIENT_FUNDS,
    TOKEN_TRANSIENT,
};
