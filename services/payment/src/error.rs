//! Errors of the gRPC API and their one mapping to `tonic::Status`.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Why a PaymentService call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A request field is malformed.
    #[error("invalid {field}: {description}")]
    InvalidArgument {
        field: &'static str,
        description: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        match e {
            ServiceError::InvalidArgument { field, description } => Status::with_error_details(
                Code::InvalidArgument,
                format!("invalid {field}"),
                ErrorDetails::with_bad_request_violation(field, description),
            ),
            ServiceError::NotFound(what) => Status::not_found(what),
            ServiceError::Database(e) => match e {
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

    #[test]
    fn invalid_argument_carries_a_field_violation() {
        let status = Status::from(ServiceError::InvalidArgument {
            field: "order_id",
            description: "not a UUID".into(),
        });
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status
            .get_details_bad_request()
            .expect("BadRequest details");
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "order_id");
        assert_eq!(
            Status::from(ServiceError::NotFound("x".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            Status::from(ServiceError::Database(sqlx::Error::PoolTimedOut)).code(),
            Code::Unavailable
        );
    }
}
