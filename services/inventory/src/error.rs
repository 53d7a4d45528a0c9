//! Errors of the inventory API and the one place they become gRPC statuses.

use jetmart_kit::error::FieldViolation;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::MovementError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
        .take(jetmart_kit::error::MAX_VIOLATIONS)
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(e) => e.into(),
            StoreError::Conflict { .. } => ApiError::Aborted(e.to_string()),
            StoreError::Movement(e) => e.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => ApiError::Unavailable(e.to_string()),
            // serialization_failure, deadlock_detected: retryable.
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("40001" | "40P01")) =>
            {
                ApiError::Aborted(e.to_string())
            }
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<MovementError> for ApiError {
    fn from(e: MovementError) -> Self {
        match e {
            MovementError::InsufficientAvailable { .. }
            | MovementError::InsufficientReserved { .. } => ApiError::FailedPrecondition {
                subject: String::new(),
                description: e.to_string(),
            },
            MovementError::Overflow => ApiError::FailedPrecondition {
                subject: String::new(),
                description: e.to_string(),
            },
            MovementError::ZeroQuantity => {
                ApiError::InvalidArgument(vec![FieldViolation::new("delta", e.to_string())])
            }
            MovementError::BadReason => {
                ApiError::InvalidArgument(vec![FieldViolation::new("reason", e.to_string())])
            }
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let message = e.to_string();
        match e {
            ApiError::InvalidArgument(violations) => {
                jetmart_kit::error::invalid_argument(violations)
            }
            ApiError::NotFound(sku) => Status::with_error_details(
                Code::NotFound,
                message,
                ErrorDetails::with_resource_info(
                    "jetmart.inventory.v1.StockLevel",
                    sku,
                    "",
                    "never stocked",
                ),
            ),
            ApiError::FailedPrecondition {
                subject,
                description,
            } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_precondition_failure_violation("STOCK", subject, description),
            ),
            ApiError::AlreadyExists { .. } => Status::already_exists(message),
            ApiError::Unavailable(_) => Status::unavailable(message),
            ApiError::Aborted(_) => Status::aborted(message),
            ApiError::Internal(_) => {
                tracing::error!(error = %message, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
