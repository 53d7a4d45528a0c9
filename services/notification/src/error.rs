//! Every failure of the notification API and of start-up, and the one place an API failure
//! becomes a gRPC status.

use tonic::Status;

use crate::mailer::MailerError;
use crate::store::StoreError;

pub use jetmart_kit::error::FieldViolation;

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
            ApiError::Invalid(violations) => jetmart_kit::error::invalid_argument(violations),
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
