//! Pure domain logic of the survey service: eligibility rules with hash-based sampling,
//! single-use expiring tokens (only their hash is stored), answer validation and NPS.
//! No storage, HTTP, NATS or gRPC types here.
//!
//! On `order.confirmed`: if no invitation exists for the order yet, [`decide`]; when
//! [`Decision::Eligible`], [`issue_token`], store the hash with the expiry, and publish
//! `survey.requested` with [`survey_link`]. On an answer: [`SurveyToken::parse`],
//! [`validate_response`], look up the hash, [`check_redeemable`], then mark used atomically.

pub mod eligibility;
pub mod nps;
pub mod response;
pub mod sampling;
pub mod token;

pub use eligibility::{
    CustomerHistory, Decision, EligibilityConfig, Ineligible, OrderFacts, decide,
};
pub use nps::{NpsCategory, NpsSummary, Score};
pub use response::{
    DEFAULT_MAX_COMMENT_CHARS, ResponseInput, ResponseViolation, ValidResponse, validate_response,
};
pub use sampling::{InvalidSamplingRate, SamplingRate, sampling_bucket};
pub use token::{
    IssuedToken, SurveyToken, TOKEN_BYTES, TokenError, TokenHash, TokenState, check_redeemable,
    issue_token, issue_token_with, survey_link,
};
