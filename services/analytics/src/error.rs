//! Every failure of the analytics API, and the one place it becomes a gRPC status.

use tonic::Status;

/// One bad request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: &'static str,
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request: {}", summary(.0))]
    Invalid(Vec<FieldViolation>),
    #[error("read model unavailable: {0}")]
    Unavailable(#[from] redis::RedisError),
}

fn summary(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Invalid(ref violations) => jetmart_kit::grpc::invalid_argument(
                violations
                    .iter()
                    .map(|v| (v.field.to_string(), v.description.clone())),
            ),
            ApiError::Unavailable(ref cause) => {
                tracing::warn!(error = %cause, "read model unavailable");
                Status::unavailable("the analytics read model (Redis) is unavailable")
            }
        }
    }
}
