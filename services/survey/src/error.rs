//! Every failure of the survey API, and the one place it becomes a gRPC status. The HTTP pages
//! map the same errors to status codes in [`crate::pages`].

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::TokenError;
use crate::store::StoreError;

pub use jetmart_kit::error::FieldViolation;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// Malformed, unknown, expired or spent token.
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("survey {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    pub fn field(field: &'static str, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, description)])
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Invalid(violations) => jetmart_kit::error::invalid_argument(violations),
            // A malformed token is just one that was never issued.
            ApiError::Token(TokenError::Malformed | TokenError::Unknown) => {
                Status::not_found(TokenError::Unknown.to_string())
            }
            ApiError::Token(
                ref t @ (TokenError::Expired { .. } | TokenError::AlreadyUsed { .. }),
            ) => {
                let kind = match t {
                    TokenError::Expired { .. } => "TOKEN_EXPIRED",
                    _ => "TOKEN_USED",
                };
                let mut details = ErrorDetails::new();
                details.add_precondition_failure_violation(kind, "token", t.to_string());
                Status::with_error_details(Code::FailedPrecondition, t.to_string(), details)
            }
            ApiError::NotFound(_) => Status::not_found(e.to_string()),
            ApiError::Store(store) if store.is_unavailable() => {
                tracing::warn!(error = %store, "survey store unavailable");
                Status::unavailable("survey store unavailable, retry later")
            }
            ApiError::Store(store) => {
                tracing::error!(error = %store, "survey store failure");
                Status::internal("internal error")
            }
        }
    }
}
