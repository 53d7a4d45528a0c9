//! Pure domain logic of the order service: money, PlaceOrder validation, idempotency
//! fingerprints and the event-sourced order aggregate. No I/O here; storage, gRPC and event
//! handlers wrap these types.
//!
//! Typical PlaceOrder flow:
//! 1. [`validate`] the input against [`Limits`] (violations -> INVALID_ARGUMENT);
//! 2. [`RequestFingerprint::of`] the validated order and [`check_idempotency`] against the store;
//! 3. [`Order::place`] and append the events at version 0.

pub mod aggregate;
pub mod email;
pub mod events;
pub mod fingerprint;
pub mod money;
pub mod validation;

pub use aggregate::{
    CancelRefused, Cancellation, MAX_DETAIL_LEN, Order, OrderStatus, ReplayError, StatusChange,
};
pub use events::{CancelReason, OrderEvent, OrderId, OrderPlaced, Shortage};
pub use fingerprint::{
    IdempotencyCheck, MalformedFingerprint, RequestFingerprint, check_idempotency,
};
pub use money::{Currency, Money, MoneyError, UnknownCurrency};
pub use validation::{
    FieldViolation, Limits, LineInput, OrderLine, PlaceOrderInput, PriceInput, ValidatedOrder,
    validate,
};
