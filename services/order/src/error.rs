//! Every failure of the order API, and the one place it becomes a gRPC status.

use tonic::Status;

use crate::domain::{CancelRefused, FieldViolation};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    #[error("order {0} not found")]
    NotFound(String),
    #[error("idempotency key was already used with a different request")]
    KeyReused,
    #[error(transparent)]
    CancelRefused(#[from] CancelRefused),
    #[error("read model has not reached version {wanted} yet (it is at {at})")]
    NotYet { wanted: i64, at: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    pub fn field(field: &str, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, description)])
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Invalid(violations) => jetmart_kit::error::invalid_argument(violations),
            ApiError::NotFound(_) => Status::not_found(e.to_string()),
            ApiError::KeyReused => Status::already_exists(e.to_string()),
            ApiError::CancelRefused(_) => Status::failed_precondition(e.to_string()),
            ApiError::NotYet { .. } => Status::unavailable(e.to_string()),
            ApiError::Store(StoreError::Conflict(_)) => Status::aborted(e.to_string()),
            ApiError::Store(other) => {
                tracing::error!(error = %other, "order store failure");
                Status::internal("internal error")
            }
        }
    }
}
