//! Errors of the gRPC API and their one mapping to `tonic::Status`.

use jetmart_kit::error::FieldViolation;
use tonic::Status;

/// Why a PaymentService call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Request fields are malformed.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    #[error("{0}")]
    NotFound(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl ApiError {
    pub fn field(field: &str, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, description)])
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::Invalid(violations) => jetmart_kit::error::invalid_argument(violations),
            ApiError::NotFound(what) => Status::not_found(what),
            ApiError::Database(e) => match e {
                // Postgres away or overloaded: the client may retry.
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                    tracing::warn!(error = %e, "database unavailable");
                    Status::unavailable("payment database unavailable")
                }
                e => {
                    tracing::error!(error = %e, "database error");
                    Status::internal("payment database error")
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt;

    #[test]
    fn invalid_argument_carries_a_field_violation() {
        let status = Status::from(ApiError::field("order_id", "not a UUID"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status
            .get_details_bad_request()
            .expect("BadRequest details");
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "order_id");
        assert_eq!(
            Status::from(ApiError::NotFound("x".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            Status::from(ApiError::Database(sqlx::Error::PoolTimedOut)).code(),
            Code::Unavailable
        );
    }
}
