//! Every failure of the notification API and of start-up, and the one place an API failure
//! becomes a gRPC status.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::mailer::MailerError;
use crate::store::StoreError;

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Invalid(violations) => {
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                let summary: Vec<String> = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect();
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("invalid request: {}", summary.join("; ")),
                    details,
                )
            }
            ApiError::Store(StoreError::Database(e)) => {
                tracing::error!(error = %e, "notification store failure");
                Status::unavailable("notification store unavailable")
            }
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Service(#[from] jetmart_kit::StartError),
    #[error(transparent)]
    Config(#[from] jetmart_kit::ConfigError),
    #[error(transparent)]
    Mailer(#[from] MailerError),
}
