//! Errors of the inventory API and the one place they become gRPC statuses.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::domain::MovementError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Bad input, one violation per field.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("SKU {0} not found")]
    NotFound(String),
    /// The request is valid but the stock does not allow it (it would go negative).
    #[error("{description}")]
    FailedPrecondition {
        subject: String,
        description: String,
    },
    /// The idempotency key was used before with a different request.
    #[error("idempotency key {key:?} was already used for a different adjustment")]
    AlreadyExists { key: String },
    /// The database is unreachable or overloaded: retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A lost race on a stock row: retry.
    #[error("aborted: {0}")]
    Aborted(String),
    #[error("internal: {0}")]
    Internal(String),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(e) => e.into(),
            StoreError::Conflict { .. } => ServiceError::Aborted(e.to_string()),
            StoreError::Movement(e) => e.into(),
        }
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => ServiceError::Unavailable(e.to_string()),
            // serialization_failure, deadlock_detected: retryable.
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("40001" | "40P01")) =>
            {
                ServiceError::Aborted(e.to_string())
            }
            _ => ServiceError::Internal(e.to_string()),
        }
    }
}

impl From<MovementError> for ServiceError {
    fn from(e: MovementError) -> Self {
        match e {
            MovementError::InsufficientAvailable { .. }
            | MovementError::InsufficientReserved { .. } => ServiceError::FailedPrecondition {
                subject: String::new(),
                description: e.to_string(),
            },
            MovementError::Overflow => ServiceError::FailedPrecondition {
                subject: String::new(),
                description: e.to_string(),
            },
            MovementError::ZeroQuantity => {
                ServiceError::InvalidArgument(vec![FieldViolation::new("delta", e.to_string())])
            }
            MovementError::BadReason => {
                ServiceError::InvalidArgument(vec![FieldViolation::new("reason", e.to_string())])
            }
        }
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::InvalidArgument(violations) => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request(violations),
            ),
            ServiceError::NotFound(sku) => Status::with_error_details(
                Code::NotFound,
                message,
                ErrorDetails::with_resource_info(
                    "jetmart.inventory.v1.StockLevel",
                    sku,
                    "",
                    "never stocked",
                ),
            ),
            ServiceError::FailedPrecondition {
                subject,
                description,
            } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_precondition_failure_violation("STOCK", subject, description),
            ),
            ServiceError::AlreadyExists { .. } => Status::already_exists(message),
            ServiceError::Unavailable(_) => Status::unavailable(message),
            ServiceError::Aborted(_) => Status::aborted(message),
            ServiceError::Internal(_) => {
                tracing::error!(error = %message, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
